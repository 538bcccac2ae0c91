"""Reading a planned tile's pixels and encoding them for the tiles table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .errors import SourceError
from .pixels import encode_tile, resolve_codec, sniff_format
from .planning import SourcePlan, TilePlan
from .slides import read_region_rgb

if TYPE_CHECKING:
    import openslide

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
    return cut_slide_tile(plan.handle(), tile.x, tile.y, tile.level, tile.read_size, tile.width, tile.height)


def _point_tile(plan: SourcePlan, tile: TilePlan) -> np.ndarray:
    return cut_point_tile(plan.handle(), tile.x, tile.y, tile.width, tile.height)


def cut_slide_tile(
    slide: openslide.AbstractSlide, x: int, y: int, level: int, read_size: int, width: int, height: int
) -> np.ndarray:
    """A square region of `read_size` read at `level` from level-0 (x, y), resized to width x height."""
    rgb = read_region_rgb(slide, x, y, level, read_size, read_size)
    if rgb.shape[0] != height or rgb.shape[1] != width:
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))
    return rgb


def cut_point_tile(image: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
    """A width x height window of `image` at (x, y), padded with white where it leaves the image."""
    out = np.full((height, width, 3), PAD_VALUE, dtype=np.uint8)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, image.shape[1]), min(y + height, image.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1]
    return out
