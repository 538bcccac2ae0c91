"""The grid of tiles over a slide at a target µm/px: which pyramid level to read, where, how big."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.errors import SourceError
from ..core.validation import Interval, invalid, option, validate


@dataclass
class GridSettings:
    """How slides are tiled and point tiles are cut (options shared by `ingest` and `preview`)."""

    mpp: float | None = option(
        None,
        Interval(0, open_low=True),
        optional=True,
        help="µm/px of the files, overriding their metadata (needed when it has none).",
    )
    target_mpp: float = option(0.5, Interval(0, open_low=True), help="µm/px of slide tiles.")
    tile_size: int = option(224, Interval(8, integer=True), help="Tile side in pixels.")
    overlap: int = option(0, Interval(0, integer=True), help="Overlap of slide tiles in pixels.")
    min_tissue: float = option(
        0.5, Interval(0, 1), help="Keep slide tiles with at least this tissue fraction."
    )

    def __post_init__(self) -> None:
        validate(self)

    def check_relations(self) -> None:
        if self.overlap >= self.tile_size:
            raise invalid("--overlap", self.overlap, f"smaller than --tile-size {self.tile_size}")


@dataclass(frozen=True)
class SlideGeometry:
    """What ingest needs to know about a slide before reading any tile."""

    format: str
    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None  # from the file's metadata, None when it has none


def read_size_at(size0: int, downsample: float) -> int:
    """Side of the region to read at a level with `downsample` to cover `size0` level-0 pixels."""
    return max(1, math.ceil(size0 / downsample))


@dataclass(frozen=True)
class GridTile:
    x: int  # top-left in level-0 pixels
    y: int
    tissue_fraction: float


@dataclass(frozen=True)
class Grid:
    level: int  # pyramid level to read from
    read_size: int  # side of the region read at that level, before resizing to tile_size
    size0: int  # side of the tile's region in level-0 pixels
    tile_size: int  # side of the stored tile
    mpp: float  # µm/px of the stored tile
    tiles: tuple[GridTile, ...]


def best_level(downsamples: tuple[float, ...], wanted_downsample: float) -> int:
    """The coarsest level that is still at least as fine as wanted (never upsample from a coarse level)."""
    candidates = [i for i, d in enumerate(downsamples) if d <= wanted_downsample * (1 + 1e-3)]
    return max(candidates, key=lambda i: downsamples[i]) if candidates else 0


def plan_grid(
    name: str,
    geometry: SlideGeometry,
    slide_mpp: float,
    target_mpp: float,
    tile_size: int,
    overlap: int,
    mask: np.ndarray,
    min_tissue: float,
) -> Grid:
    """Lay a grid of tile_size tiles at target_mpp over the slide and keep those with enough tissue."""
    if target_mpp < slide_mpp * 0.95:
        raise SourceError(
            f"{name}: the slide is scanned at {slide_mpp:.3g} µm/px, coarser than --target-mpp "
            f"{target_mpp:.3g}; pass --target-mpp {slide_mpp:.3g} or larger (or fix --mpp)"
        )
    scale = target_mpp / slide_mpp  # level-0 pixels per stored pixel
    size0 = max(1, round(tile_size * scale))
    if size0 > geometry.width or size0 > geometry.height:
        raise SourceError(
            f"{name}: a {tile_size} px tile at {target_mpp:.3g} µm/px covers {size0} px, larger than the "
            f"image ({geometry.width}x{geometry.height} px); lower --tile-size or --target-mpp"
        )
    stride0 = max(1, round((tile_size - overlap) * scale))
    level = best_level(geometry.level_downsamples, scale)
    read_size = read_size_at(size0, geometry.level_downsamples[level])

    mask_scale_x = mask.shape[1] / geometry.width
    mask_scale_y = mask.shape[0] / geometry.height
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    tiles = []
    for y in range(0, geometry.height - size0 + 1, stride0):
        for x in range(0, geometry.width - size0 + 1, stride0):
            fraction = _mask_fraction(integral, x, y, size0, mask_scale_x, mask_scale_y)
            if fraction >= min_tissue:
                tiles.append(GridTile(x=x, y=y, tissue_fraction=fraction))
    return Grid(level, read_size, size0, tile_size, target_mpp, tuple(tiles))


def _mask_fraction(integral: np.ndarray, x: int, y: int, size0: int, sx: float, sy: float) -> float:
    """Fraction of tissue pixels of the mask under a level-0 square, from the mask's integral image."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    x0, y0 = min(width - 1, int(x * sx)), min(height - 1, int(y * sy))
    x1, y1 = (
        max(x0 + 1, min(width, round((x + size0) * sx))),
        max(y0 + 1, min(height, round((y + size0) * sy))),
    )
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return float(total) / float((x1 - x0) * (y1 - y0))
