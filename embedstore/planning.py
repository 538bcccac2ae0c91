"""Planning a source: open it, fingerprint it, decide its tiles and their ids, without reading tile pixels."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .discover import SourceJob
from .errors import SourceError
from .grid import Grid, plan_grid
from .ids import file_fingerprint, source_id_for, tile_id_for
from .slides import SlideGeometry, image_file_mpp, open_slide, slide_geometry, thumbnail_rgb
from .tissue import tissue_mask

BORDER_SLACK = 1.0  # points up to a pixel outside the image are annotation rounding
SMALL_IMAGE = 2048  # a one-level image no larger than this without µm/px is likely a tile, not a slide


@dataclass(frozen=True)
class GridSettings:
    """How slides are tiled and point tiles are cut."""

    mpp: float | None = None  # overrides the file's µm/px
    target_mpp: float = 0.5
    tile_size: int = 224
    overlap: int = 0
    min_tissue: float = 0.5


@dataclass
class TilePlan:
    tile_id: str
    x: int
    y: int
    level: int
    size0: int
    width: int  # stored pixel size
    height: int
    read_size: int  # side read at `level` before resizing (slides only)
    mpp: float | None
    tissue_fraction: float | None
    label: str | None = None


@dataclass
class SourcePlan:
    """A source ready to read: its row for the sources table and its tiles."""

    job: SourceJob
    source_id: str
    fingerprint: str
    row: dict[str, Any]
    tiles: list[TilePlan]
    label_conflicts: int = 0  # points that fell on an already planned tile with another label
    _handle: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def handle(self):
        """The opened slide (slides) or decoded pixels (points), opened once and shared by reader threads."""
        with self._lock:
            if self._handle is None:
                if self.job.kind == "slide":
                    self._handle = open_slide(self.job.path)
                    # Plain images decode lazily on first read; finish that before threads share the handle.
                    self._handle.read_region((0, 0), 0, (1, 1))
                else:
                    self._handle = load_rgb(self.job.path)
            return self._handle

    def release(self) -> None:
        with self._lock:
            if self._handle is not None and hasattr(self._handle, "close"):
                self._handle.close()
            self._handle = None


def plan_source(job: SourceJob, grid: GridSettings) -> SourcePlan:
    """Plan one source; SourceError naming the file and the fix when it cannot be ingested."""
    try:
        fingerprint = file_fingerprint(job.path)
    except OSError as error:
        raise SourceError(f"{job.path}: cannot be read ({error.strerror or error}); check the file") from None
    if job.kind == "slide":
        return _plan_slide(job, fingerprint, grid)
    if job.kind == "image":
        return _plan_image_tile(job, fingerprint, grid)
    return _plan_points(job, fingerprint, grid)


def _source_row(
    job: SourceJob,
    fingerprint: str,
    fmt: str,
    size: tuple[int, int],
    levels: int,
    mpp: float | None,
    mpp_origin: str,
    n_tiles: int,
) -> dict[str, Any]:
    return {
        "source_id": source_id_for(fingerprint),
        "uri": str(job.path.resolve()),
        "kind": job.kind,
        "format": fmt,
        "width": size[0],
        "height": size[1],
        "level_count": levels,
        "mpp": mpp,
        "mpp_origin": mpp_origin,
        "fingerprint": fingerprint,
        "status": "ok",
        "error": None,
        "n_tiles": n_tiles,
        "ingested_at": datetime.now(UTC),
    }


def _resolve_mpp(metadata_mpp: float | None, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "override"
    if metadata_mpp is not None:
        return metadata_mpp, "metadata"
    return None, "none"


@dataclass(frozen=True)
class SlideLayout:
    """A slide's geometry, µm/px, thumbnail, tissue mask and tile grid: everything but tile pixels."""

    geometry: SlideGeometry
    mpp: float
    mpp_origin: str
    thumbnail: np.ndarray
    mask: np.ndarray
    grid: Grid


def _missing_mpp_message(path: Path, geometry: SlideGeometry) -> str:
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
        mpp, origin = _resolve_mpp(geometry.mpp, grid.mpp)
        if mpp is None:
            raise SourceError(_missing_mpp_message(path, geometry))
        thumbnail = thumbnail_rgb(slide)
    finally:
        slide.close()
    mask = tissue_mask(thumbnail)
    layout = plan_grid(
        str(path), geometry, mpp, grid.target_mpp, grid.tile_size, grid.overlap, mask, grid.min_tissue
    )
    return SlideLayout(geometry, mpp, origin, thumbnail, mask, layout)


def _plan_slide(job: SourceJob, fingerprint: str, grid: GridSettings) -> SourcePlan:
    found = layout_slide(job.path, grid)
    layout, geometry = found.grid, found.geometry
    tiles = [
        TilePlan(
            tile_id=tile_id_for(fingerprint, layout.level, t.x, t.y, layout.size0, layout.mpp),
            x=t.x,
            y=t.y,
            level=layout.level,
            size0=layout.size0,
            width=layout.tile_size,
            height=layout.tile_size,
            read_size=layout.read_size,
            mpp=layout.mpp,
            tissue_fraction=t.tissue_fraction,
        )
        for t in layout.tiles
    ]
    row = _source_row(
        job,
        fingerprint,
        geometry.format,
        (geometry.width, geometry.height),
        len(geometry.level_dimensions),
        found.mpp,
        found.mpp_origin,
        len(tiles),
    )
    return SourcePlan(job, row["source_id"], fingerprint, row, tiles)


def _image_header(path: Path) -> tuple[str, tuple[int, int]]:
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


def _plan_image_tile(job: SourceJob, fingerprint: str, grid: GridSettings) -> SourcePlan:
    """An image that is one tile, kept at its own size."""
    fmt, (width, height) = _image_header(job.path)
    mpp, origin = _resolve_mpp(image_file_mpp(job.path), grid.mpp)
    side = max(width, height)
    tile = TilePlan(
        tile_id_for(fingerprint, 0, 0, 0, side, mpp), 0, 0, 0, side, width, height, 0, mpp, None, job.label
    )
    row = _source_row(job, fingerprint, fmt, (width, height), 1, mpp, origin, 1)
    return SourcePlan(job, row["source_id"], fingerprint, row, [tile])


def _plan_points(job: SourceJob, fingerprint: str, grid: GridSettings) -> SourcePlan:
    """One tile_size tile centred on each point, at the image's own resolution, padded at borders."""
    fmt, (width, height) = _image_header(job.path)
    mpp, origin = _resolve_mpp(None, grid.mpp)
    size = grid.tile_size
    tiles: dict[str, TilePlan] = {}
    conflicts = 0
    for x, y, label in job.points:
        if not (-BORDER_SLACK <= x < width + BORDER_SLACK and -BORDER_SLACK <= y < height + BORDER_SLACK):
            raise SourceError(
                f"{job.path}: point ({x:g}, {y:g}) lies outside the {width}x{height} image; "
                "check the coordinates (or --one-based)"
            )
        x, y = min(max(x, 0), width - 1), min(max(y, 0), height - 1)  # annotations on the border edge
        left, top = round(x) - size // 2, round(y) - size // 2
        tile_id = tile_id_for(fingerprint, 0, left, top, size, mpp)
        if tile_id in tiles:
            conflicts += tiles[tile_id].label != label
            continue
        tiles[tile_id] = TilePlan(tile_id, left, top, 0, size, size, size, size, mpp, None, label)
    row = _source_row(job, fingerprint, fmt, (width, height), 1, mpp, origin, len(tiles))
    return SourcePlan(
        job, row["source_id"], fingerprint, row, list(tiles.values()), label_conflicts=conflicts
    )
