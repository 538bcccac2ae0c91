"""Opening whole-slide images (OpenSlide) and plain images (as one-level slides), and finding their µm/px."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..core.errors import SourceError
from .grid import SlideGeometry

if TYPE_CHECKING:  # imported where slides are opened, so reading stored tiles needs no OpenSlide
    import openslide

Image.MAX_IMAGE_PIXELS = None  # large plain images are slides, not decompression bombs

SLIDE_SUFFIXES = {
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
READABLE_SUFFIXES = SLIDE_SUFFIXES | IMAGE_SUFFIXES

# Resolution metadata outside this range is a screen DPI (72, 96, 300 dpi), not a microscope scale.
_PLAUSIBLE_MPP = (0.05, 50.0)


def open_slide(path: Path) -> openslide.AbstractSlide:
    """Open a WSI with OpenSlide, or a plain image as a one-level slide; SourceError when neither works."""
    if not path.exists():
        raise SourceError(f"{path}: file not found; check the path")
    if path.suffix.lower() not in READABLE_SUFFIXES:
        raise SourceError(
            f"{path}: unsupported format {path.suffix or '(no extension)'}; "
            f"supported: {', '.join(sorted(READABLE_SUFFIXES))}"
        )
    import openslide

    try:
        return openslide.open_slide(str(path))
    except (openslide.OpenSlideError, OSError, ValueError) as error:
        raise SourceError(
            f"{path}: cannot be read as a slide or image ({error}); is the file complete?"
        ) from None


def slide_geometry(slide: openslide.AbstractSlide, path: Path) -> SlideGeometry:
    """Levels, size and metadata µm/px of an opened slide."""
    import openslide

    if isinstance(slide, openslide.ImageSlide):
        fmt = path.suffix.lower().lstrip(".")
        mpp = image_file_mpp(path)
    else:
        fmt = slide.properties.get(openslide.PROPERTY_NAME_VENDOR, "openslide")
        mpp = _openslide_mpp(slide)
    width, height = slide.dimensions
    return SlideGeometry(
        format=fmt,
        width=int(width),
        height=int(height),
        level_dimensions=tuple((int(w), int(h)) for w, h in slide.level_dimensions),
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        mpp=mpp,
    )


def _openslide_mpp(slide: openslide.AbstractSlide) -> float | None:
    import openslide

    value = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    if value is None:
        return None
    try:
        mpp = float(value)
    except ValueError:
        return None
    return mpp if _PLAUSIBLE_MPP[0] <= mpp <= _PLAUSIBLE_MPP[1] else None


def image_file_mpp(path: Path) -> float | None:
    """µm/px from a plain image's resolution tags, when they describe a microscope scale."""
    try:
        with Image.open(path) as image:
            tags = getattr(image, "tag_v2", None)
            if tags is not None and 282 in tags:  # TIFF XResolution + ResolutionUnit
                per_unit = float(tags[282])
                unit = tags.get(296, 2)
                microns = {2: 25_400.0, 3: 10_000.0}.get(unit)
                mpp = microns / per_unit if microns and per_unit > 0 else None
            else:
                dpi = image.info.get("dpi")
                mpp = 25_400.0 / float(dpi[0]) if dpi and float(dpi[0]) > 0 else None
    except OSError:
        return None
    if mpp is None or not _PLAUSIBLE_MPP[0] <= mpp <= _PLAUSIBLE_MPP[1]:
        return None
    return mpp


def read_region_rgb(slide: openslide.AbstractSlide, x0: int, y0: int, level: int, width: int, height: int):
    """Read a region (top-left in level-0 pixels, size in level pixels) as (H, W, 3) uint8, alpha on white."""
    region = slide.read_region((int(x0), int(y0)), int(level), (int(width), int(height)))
    rgba = np.asarray(region, dtype=np.uint8)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return rgb.round().astype(np.uint8)


def thumbnail_rgb(slide: openslide.AbstractSlide, max_side: int = 2048) -> np.ndarray:
    """A thumbnail of the whole slide as (H, W, 3) uint8, for tissue detection."""
    width, height = slide.dimensions
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(slide.get_thumbnail(size).convert("RGB"), dtype=np.uint8)
