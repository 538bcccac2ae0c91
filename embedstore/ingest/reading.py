"""Reading a planned tile's pixels and encoding them for the tiles table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..core import hooks
from ..core.errors import SourceError
from ..sources.codecs import encode_tile, resolve_codec, sniff_format
from ..sources.regions import cut_point_tile, cut_slide_tile
from .planning import SourcePlan, TilePlan


@dataclass(frozen=True)
class PixelSettings:
    codec: str = "auto"  # auto | png | jpeg | none
    jpeg_quality: int = 90


def read_tile(plan: SourcePlan, tile: TilePlan, pixels: PixelSettings) -> tuple[bytes | None, str | None]:
    """Encoded pixels and their format for one tile; SourceError when the source fails mid-read."""
    hooks.fire("ingest.read_tile", source=plan.job.path, tile_id=tile.tile_id)
    if pixels.codec == "none":
        return None, None
    try:
        if plan.job.kind == "image":
            return _whole_image(plan, tile, pixels)
        rgb = _slide_tile(plan, tile) if plan.job.kind == "slide" else _point_tile(plan, tile)
    except SourceError:
        raise
    except Exception as error:  # OpenSlide and Pillow raise several types for damaged data
        raise SourceError(f"{plan.job.path}: reading tile at ({tile.x}, {tile.y}) failed ({error})") from None
    codec = resolve_codec(pixels.codec, max(tile.width, tile.height))
    return encode_tile(rgb, codec, pixels.jpeg_quality), codec


def _whole_image(plan: SourcePlan, tile: TilePlan, pixels: PixelSettings) -> tuple[bytes, str]:
    """PNG and JPEG files are stored byte for byte; other formats are re-encoded."""
    data = plan.job.path.read_bytes()
    fmt = sniff_format(data)
    wanted = resolve_codec(pixels.codec, max(tile.width, tile.height))
    if fmt is not None and (pixels.codec == "auto" or fmt == wanted):
        return data, fmt
    with Image.open(plan.job.path) as image:
        rgb = np.asarray(image.convert("RGB"))
    return encode_tile(rgb, wanted, pixels.jpeg_quality), wanted


def _slide_tile(plan: SourcePlan, tile: TilePlan) -> np.ndarray:
    return cut_slide_tile(plan.handle(), tile.x, tile.y, tile.level, tile.read_size, tile.width, tile.height)


def _point_tile(plan: SourcePlan, tile: TilePlan) -> np.ndarray:
    return cut_point_tile(plan.handle(), tile.x, tile.y, tile.width, tile.height)
