"""What `ingest` can be told, and what it reports. A leaf: importable without OpenSlide or torch."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.reports import JsonReport
from ..core.schema import GROUP_KEYS, PIXEL_CODECS
from ..core.validation import FileName, Flag, Interval, MappingOf, Name, OneOf, PathValue, option
from ..maintenance.label_options import (
    conflict_lines,
    conflicts_as_dicts,
    on_label_conflict_option,
    skip_empty_labels_option,
)
from ..runtime.ray_cluster import address_option, check_engine_address, engine_option
from ..sources.grid import GridSettings

if TYPE_CHECKING:
    from ..storage.versions import TableUpkeep

KINDS = ("auto", "slide", "imagefolder", "images", "manifest", "points")


def _default_workers() -> int:
    return min(8, (os.cpu_count() or 2) + 2)


@dataclass
class IngestOptions(GridSettings):
    """Everything `embedstore ingest` can be told (the grid fields come from GridSettings). Defaults suit
    20x H&E slides."""

    kind: str = option(
        "auto",
        OneOf(KINDS),
        help="What PATH is; auto: tables by columns, folders of class folders as imagefolder, else slides.",
    )
    task: str | None = option(
        None,
        FileName(),
        optional=True,
        help="Record labels (class folders, label column) under this task name.",
    )
    dataset: str | None = option(
        None, Name(), optional=True, help="Group key 'dataset' for these tiles (default: the path's name)."
    )
    codec: str = option(
        "auto",
        OneOf(PIXEL_CODECS),
        help="Stored pixels: auto = PNG up to 128 px, JPEG above; image files are kept byte for byte; "
        "none = references only (embedding then needs the files).",
    )
    jpeg_quality: int = option(90, Interval(1, 100, integer=True), help="JPEG quality of stored slide tiles.")
    path_column: str = option("path", Name(), help="Manifest column with image paths.")
    path_template: str | None = option(
        None, Name(), optional=True, help="Build manifest paths from columns, e.g. '{dataset}_{uid}.png'."
    )
    image_column: str = option("image", Name(), help="Point-table column with images.")
    label_column: str | None = option(
        None, Name(), optional=True, help="Manifest/point column with labels (default: 'label' if present)."
    )
    groups: dict[str, str] = option(
        constraint=MappingOf(GROUP_KEYS), default_factory=dict, cli=False
    )  # group key -> manifest column; the CLI's --group KEY=COLUMN
    images_dir: Path | None = option(
        None,
        PathValue(),
        optional=True,
        help="Where manifest/point images live; files are also found by name below it.",
    )
    one_based: bool = option(False, Flag(), help="Point coordinates start at 1 (MATLAB style).")
    on_label_conflict: str = on_label_conflict_option(
        "copies of one tile (byte-identical files, points on one spot)", "in path order"
    )
    skip_empty_labels: bool = skip_empty_labels_option(
        "with --task, ingest their tiles without a label (manifest/point label column)"
    )
    workers: int = option(
        constraint=Interval(1, integer=True),
        default_factory=_default_workers,
        help="Parallel reader threads (with --engine ray: Ray reading tasks at once).",
    )
    skip_errors: bool = option(False, Flag(), help="Record failing sources and ingest the rest.")
    chunk_tiles: int = option(4096, Interval(1, integer=True), cli=False)  # tiles per commit
    progress: bool = option(True, Flag(), help="Show progress bars.")
    compact: bool = option(
        True,
        Flag(),
        help="After the run, merge a table's fragments when more than 64 are small, and prune untagged "
        "versions older than the store's version_retention (`embedstore config`).",
    )
    engine: str = engine_option("Ray tasks reading the tiles")
    address: str | None = address_option()

    def check_relations(self) -> None:
        super().check_relations()
        check_engine_address(self.engine, self.address)


@dataclass
class IngestReport(JsonReport):
    sources_ok: int = 0
    sources_failed: int = 0
    sources_unchanged: int = 0  # already complete in the store
    tiles_added: int = 0
    tiles_present: int = 0  # planned tiles the store already had (or another process wrote meanwhile)
    labels_written: int = 0
    labels_skipped_empty: int = 0  # manifest/point rows with an empty label (skip_empty_labels)
    files_recorded: int = 0  # file paths newly recorded in the files table
    copies: int = 0  # files whose bytes another file of this run already had (one source, one tile each)
    label_conflicts: list[dict[str, Any]] = field(default_factory=list)  # tile_id, task, claims, kept
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = "local"  # ray: tiles read by Ray workers, committed here
    compaction: list[TableUpkeep] = field(default_factory=list)  # the automatic compaction after the run

    def summary(self) -> str:
        lines = [
            f"sources: {self.sources_ok} ingested, {self.sources_unchanged} already in the store, "
            f"{self.sources_failed} failed",
            f"tiles: {self.tiles_added} added, {self.tiles_present} already present "
            f"({self.seconds:.1f} s, {_rate(self.tiles_added, self.seconds)} tiles/s"
            f"{', read on Ray' if self.engine == 'ray' else ''})",
            f"labels: {self.labels_written} written"
            + (f", {self.labels_skipped_empty} empty skipped" if self.labels_skipped_empty else ""),
        ]
        if self.copies:
            lines.append(
                f"copies: {self.copies} file(s) are byte-identical to another file; each set is one "
                "source and its tiles are stored once (every path is recorded in the files table)"
            )
        lines += conflict_lines(self.label_conflicts, "copies or points on the same spot", "in path order")
        lines += [f"failed: {uri}: {error}" for uri, error in self.failures]
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"compaction: {done.line()}" for done in self.compaction if done.worth_saying]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["failures"] = [{"uri": uri, "error": error} for uri, error in self.failures]
        out["label_conflicts"] = conflicts_as_dicts(self.label_conflicts)
        out["tiles_per_s"] = self.tiles_added / self.seconds if self.seconds > 0 else 0.0
        return out


def _rate(count: int, seconds: float) -> str:
    """Tiles per second, with a decimal where the rate is below 10 (0.3 tiles/s, not 0)."""
    rate = count / max(seconds, 1e-9)
    return f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"
