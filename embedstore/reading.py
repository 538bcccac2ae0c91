"""Reading a planned tile's pixels and encoding them for the tiles table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import SourceError
from .pixels import encode_tile, resolve_codec, sniff_format
from .planning import SourcePlan, TilePlan
from .slides import read_region_rgb

PAD_VALUE = 255  # point tiles are padded with white (glass) at image borders


@dataclass(frozen=True)
class PixelSettings:
    codec: str = "auto"  # auto | png | jpeg | none
    jpeg_quality: int = 90


def read_tile(plan: SourcePlan, tile: TilePlan, pixels: PixelSettings) -> tuple[bytes | None, str | None]:
    """Encoded pixels and their format for one tile; SourceError when the source fails mid-read."""
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
    rgb = read_region_rgb(plan.handle(), tile.x, tile.y, tile.level, tile.read_size, tile.read_size)
    if rgb.shape[0] != tile.height or rgb.shape[1] != tile.width:
        resized = Image.fromarray(rgb).resize((tile.width, tile.height), Image.Resampling.LANCZOS)
        rgb = np.asarray(resized)
    return rgb


def _point_tile(plan: SourcePlan, tile: TilePlan) -> np.ndarray:
    image: np.ndarray = plan.handle()
    height, width = image.shape[:2]
    out = np.full((tile.height, tile.width, 3), PAD_VALUE, dtype=np.uint8)
    x0, y0 = max(tile.x, 0), max(tile.y, 0)
    x1, y1 = min(tile.x + tile.width, width), min(tile.y + tile.height, height)
    out[y0 - tile.y : y1 - tile.y, x0 - tile.x : x1 - tile.x] = image[y0:y1, x0:x1]
    return out
