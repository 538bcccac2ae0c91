"""Planning a source: open it, fingerprint it, decide its tiles and their ids, without reading tile pixels.

Byte-identical files have one fingerprint, so they plan to one source and the same tiles:
`merge_copies` folds them into one plan that remembers every file, and the labels the copies (or
points on one spot) give a tile are kept as claims that `resolve_label_conflicts` settles by policy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..core.errors import SourceError
from ..core.ids import file_fingerprint, source_id_for, tile_id_for
from ..maintenance.label_options import settle_conflict
from ..sources.grid import GridSettings
from ..sources.layout import layout_slide, resolve_mpp
from ..sources.regions import image_header, load_rgb
from ..sources.slides import image_file_mpp, open_slide
from .discover import SourceJob

BORDER_SLACK = 1.0  # points up to a pixel outside the image are annotation rounding


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
    # (label, where) of every copy or point that gave this tile another label; empty when all agree
    claims: list[tuple[str | None, str]] = field(default_factory=list)

    def claim(self, label: str | None, where: str, first_where: str) -> None:
        """Another copy or point says this tile is `label`; record it when it disagrees."""
        if label == self.label and not self.claims:
            return
        if not self.claims:
            self.claims.append((self.label, first_where))
        self.claims.append((label, where))


@dataclass
class SourcePlan:
    """A source ready to read: its row for the sources table and its tiles."""

    job: SourceJob
    source_id: str
    fingerprint: str
    row: dict[str, Any]
    tiles: list[TilePlan]
    files: list[str] = field(default_factory=list)  # resolved paths of every file with this content
    splits: set[str | None] = field(default_factory=set)  # the `split` group key of each copy
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

    def absorb(self, copy: SourcePlan) -> None:
        """Fold in the plan of a byte-identical file: its path, its labels as claims, its other tiles."""
        self.files.append(copy.row["uri"])
        self.splits.add(copy.job.groups.get("split"))
        mine = {tile.tile_id: tile for tile in self.tiles}
        for tile in copy.tiles:
            if tile.tile_id in mine:
                mine[tile.tile_id].claim(tile.label, copy.job.where(), self.job.where())
            else:
                self.tiles.append(tile)
                mine[tile.tile_id] = tile
        self.row["n_tiles"] = len(self.tiles)

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
        plan = _plan_slide(job, fingerprint, grid)
    elif job.kind == "image":
        plan = _plan_image_tile(job, fingerprint, grid)
    else:
        plan = _plan_points(job, fingerprint, grid)
    plan.files = [plan.row["uri"]]
    plan.splits = {job.groups.get("split")}
    return plan


def merge_copies(plans: list[SourcePlan]) -> tuple[list[SourcePlan], int]:
    """One plan per source: byte-identical files fold into the first (in discovery order).

    Returns the plans and the number of files folded into another.
    """
    first: dict[str, SourcePlan] = {}
    copies = 0
    for plan in plans:
        if plan.source_id in first:
            first[plan.source_id].absorb(plan)
            copies += 1
        else:
            first[plan.source_id] = plan
    return list(first.values()), copies


def copies_across_splits(plans: list[SourcePlan]) -> list[str]:
    """A note when byte-identical copies sit in different splits (the tile keeps the first's split)."""
    leaking = [plan for plan in plans if len(plan.splits) > 1]
    if not leaking:
        return []
    splits = ", ".join(sorted({str(split) for plan in leaking for split in plan.splits}))
    return [
        f"{len(leaking)} image(s) have byte-identical copies in different splits ({splits}); each tile "
        "keeps its first file's split, and the other split holds no copy of it"
    ]


def resolve_label_conflicts(plans: list[SourcePlan], policy: str, task: str) -> list[dict[str, Any]]:
    """Settle tiles whose copies disagree on the label: first (keep the first claim), drop, or error."""
    conflicts = []
    for plan in plans:
        for tile in plan.tiles:
            conflict = settle_conflict(tile.tile_id, task, tile.claims, policy)
            if conflict is not None:
                tile.label = conflict["kept"]
                conflicts.append(conflict)
    return conflicts


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


def _plan_image_tile(job: SourceJob, fingerprint: str, grid: GridSettings) -> SourcePlan:
    """An image that is one tile, kept at its own size."""
    fmt, (width, height) = image_header(job.path)
    mpp, origin = resolve_mpp(image_file_mpp(job.path), grid.mpp)
    side = max(width, height)
    tile = TilePlan(
        tile_id_for(fingerprint, 0, 0, 0, side, mpp), 0, 0, 0, side, width, height, 0, mpp, None, job.label
    )
    row = _source_row(job, fingerprint, fmt, (width, height), 1, mpp, origin, 1)
    return SourcePlan(job, row["source_id"], fingerprint, row, [tile])


def _plan_points(job: SourceJob, fingerprint: str, grid: GridSettings) -> SourcePlan:
    """One tile_size tile centred on each point, at the image's own resolution, padded at borders."""
    fmt, (width, height) = image_header(job.path)
    mpp, origin = resolve_mpp(None, grid.mpp)
    size = grid.tile_size
    tiles: dict[str, TilePlan] = {}
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
            centre = f"{job.path.name}@{left + size // 2},{top + size // 2}"
            tiles[tile_id].claim(label, f"{centre} (another point)", centre)
            continue
        tiles[tile_id] = TilePlan(tile_id, left, top, 0, size, size, size, size, mpp, None, label)
    row = _source_row(job, fingerprint, fmt, (width, height), 1, mpp, origin, len(tiles))
    return SourcePlan(job, row["source_id"], fingerprint, row, list(tiles.values()))
