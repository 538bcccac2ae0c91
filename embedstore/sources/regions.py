"""Cutting tile pixels out of sources: slide regions at a level, windows of images, whole image files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..core.errors import SourceError
from .slides import read_region_rgb

if TYPE_CHECKING:
    import openslide

PAD_VALUE = 255  # point tiles are padded with white (glass) at image borders


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


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """Format and size of an image, after checking that it decodes completely."""
    try:
        with Image.open(path) as image:
            fmt, size = (image.format or path.suffix.lstrip(".")).lower(), image.size
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise SourceError(f"{path}: not a readable image ({error}); is the file complete?") from None
    return fmt, size


def load_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; SourceError naming the file when it is missing or damaged."""
    if not path.is_file():
        raise SourceError(f"{path} does not exist; restore it or fix the path")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise SourceError(f"{path}: not a readable image ({error}); is the file complete?") from None
