"""How a slide will be tiled, before any tile is read: µm/px, thumbnail, tissue mask and tile grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import SourceError
from .grid import Grid, GridSettings, SlideGeometry, plan_grid
from .slides import open_slide, slide_geometry, thumbnail_rgb
from .tissue import tissue_mask

SMALL_IMAGE = 2048  # a one-level image no larger than this without µm/px is likely a tile, not a slide


@dataclass(frozen=True)
class SlideLayout:
    """A slide's geometry, µm/px, thumbnail, tissue mask and tile grid: everything but tile pixels."""

    geometry: SlideGeometry
    mpp: float
    mpp_origin: str
    thumbnail: np.ndarray
    mask: np.ndarray
    grid: Grid


def resolve_mpp(metadata_mpp: float | None, override: float | None) -> tuple[float | None, str]:
    """The µm/px to use and where it came from: override, metadata or none."""
    if override is not None:
        return override, "override"
    if metadata_mpp is not None:
        return metadata_mpp, "metadata"
    return None, "none"


def missing_mpp_message(path: Path, geometry: SlideGeometry) -> str:
    """The missing-µm/px error; for a small one-level image, also the hint that it may be a tile.

    Shared by ingest and preview, so the hint names the ingest option rather than assuming the command.
    """
    message = f"{path}: no µm/px in the file's metadata; pass --mpp (e.g. --mpp 0.25 for 40x)"
    one_level = len(geometry.level_dimensions) == 1
    if one_level and max(geometry.width, geometry.height) <= SMALL_IMAGE:
        size = f"{geometry.width}x{geometry.height}"
        message += f", or if each {size} image is one tile, ingest with --kind images"
    return message


def layout_slide(path: Path, grid: GridSettings) -> SlideLayout:
    """Open a slide, resolve its µm/px, detect tissue and lay the tile grid; SourceError on bad input."""
    slide = open_slide(path)
    try:
        geometry = slide_geometry(slide, path)
        mpp, origin = resolve_mpp(geometry.mpp, grid.mpp)
        if mpp is None:
            raise SourceError(missing_mpp_message(path, geometry))
        thumbnail = thumbnail_rgb(slide)
    finally:
        slide.close()
    mask = tissue_mask(thumbnail)
    layout = plan_grid(
        str(path), geometry, mpp, grid.target_mpp, grid.tile_size, grid.overlap, mask, grid.min_tissue
    )
    return SlideLayout(geometry, mpp, origin, thumbnail, mask, layout)
