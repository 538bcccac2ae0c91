"""Ingest: plan every source first, then read tiles in parallel and commit them in chunks.

Guarantees: a source is either wholly in the store or not at all; re-running adds nothing; an
interrupted run resumes; without `skip_errors` a failure leaves the store exactly as it was.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from tqdm.auto import tqdm

from .discover import TableColumns, discover
from .errors import EmbedstoreError, SourceError
from .ids import file_fingerprint, source_id_for
from .labels import upsert_labels
from .pixels import CODECS
from .planning import GridSettings, SourcePlan, plan_source
from .reading import PixelSettings, read_tile
from .schema import (
    GROUP_KEYS,
    LABELS,
    LABELS_SCHEMA,
    SOURCES,
    SOURCES_SCHEMA,
    TILES,
    TILES_SCHEMA,
    task_predicate,
)

if TYPE_CHECKING:
    from .store import Store


def _default_workers() -> int:
    return min(8, (os.cpu_count() or 2) + 2)


@dataclass
class IngestOptions:
    """Everything `embedstore ingest` can be told. Defaults suit 20x H&E slides."""

    kind: str = "auto"  # auto | slide | imagefolder | images | manifest | points
    task: str | None = None  # labels from folders / label columns are recorded under this task
    dataset: str | None = None  # group key "dataset" (default: the path's name)
    mpp: float | None = None  # override the file's µm/px
    target_mpp: float = 0.5
    tile_size: int = 224
    overlap: int = 0
    min_tissue: float = 0.5
    codec: str = "auto"  # auto: PNG up to 128 px, JPEG above; none: keep references only
    jpeg_quality: int = 90
    path_column: str = "path"
    path_template: str | None = None
    image_column: str = "image"
    label_column: str | None = None
    groups: dict[str, str] = field(default_factory=dict)  # group key -> manifest column
    images_dir: Path | None = None
    one_based: bool = False
    workers: int = field(default_factory=_default_workers)
    skip_errors: bool = False
    chunk_tiles: int = 4096
    progress: bool = True

    def __post_init__(self) -> None:
        if self.images_dir is not None:
            self.images_dir = Path(self.images_dir)

    def validate(self) -> None:
        """One clear message for the first bad option."""
        checks = [
            (self.tile_size >= 8, f"--tile-size {self.tile_size} is too small; use 8 or more"),
            (0 <= self.overlap < self.tile_size, f"--overlap {self.overlap} must be in [0, --tile-size)"),
            (self.target_mpp > 0, f"--target-mpp {self.target_mpp} must be positive"),
            (self.mpp is None or self.mpp > 0, f"--mpp {self.mpp} must be positive"),
            (0.0 <= self.min_tissue <= 1.0, f"--min-tissue {self.min_tissue} must be between 0 and 1"),
            (self.codec in CODECS, f"--codec {self.codec!r} must be one of {', '.join(CODECS)}"),
            (1 <= self.jpeg_quality <= 100, f"--jpeg-quality {self.jpeg_quality} must be in 1..100"),
            (self.workers >= 1, f"--workers {self.workers} must be at least 1"),
            (
                all(k in GROUP_KEYS for k in self.groups),
                f"--group keys must be among {', '.join(GROUP_KEYS)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise EmbedstoreError(message)

    def columns(self) -> TableColumns:
        return TableColumns(
            self.path_column,
            self.path_template,
            self.image_column,
            self.label_column,
            tuple(self.groups.items()),
            self.images_dir,
            self.one_based,
        )

    def grid(self) -> GridSettings:
        return GridSettings(self.mpp, self.target_mpp, self.tile_size, self.overlap, self.min_tissue)


@dataclass
class IngestReport:
    sources_ok: int = 0
    sources_failed: int = 0
    sources_unchanged: int = 0  # already complete in the store
    tiles_added: int = 0
    tiles_present: int = 0  # planned tiles the store already had
    labels_written: int = 0
    label_conflicts: int = 0  # points sharing one tile with another label (the first is kept)
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"sources: {self.sources_ok} ingested, {self.sources_unchanged} already in the store, "
            f"{self.sources_failed} failed",
            f"tiles: {self.tiles_added} added, {self.tiles_present} already present "
            f"({self.seconds:.1f} s, {self.tiles_added / max(self.seconds, 1e-9):.0f} tiles/s)",
            f"labels: {self.labels_written} written",
        ]
        if self.label_conflicts:
            lines.append(
                f"note: {self.label_conflicts} point(s) fell on the same tile as another point with "
                "another label; the first label was kept"
            )
        lines += [f"failed: {uri}: {error}" for uri, error in self.failures]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def ingest(store: Store, paths: list[Path], options: IngestOptions) -> IngestReport:
    """Ingest `paths` into `store`; see the module docstring for the guarantees."""
    options.validate()
    started = time.perf_counter()
    report = IngestReport()
    jobs = discover(paths, options.kind, options.dataset, options.columns())
    plans = _plan_all(jobs, options, report)
    if options.task is None and any(
        t.label is not None for p in plans if isinstance(p, SourcePlan) for t in p.tiles
    ):
        report.notes.append("labels were found but not recorded: pass --task NAME to record them")
    _Writer(store, options, report).run(plans)
    report.seconds = time.perf_counter() - started
    return report


def _plan_all(jobs, options: IngestOptions, report: IngestReport) -> list[SourcePlan | tuple[Any, str]]:
    """Plan every source before writing anything; without skip_errors the first failure stops here."""
    grid = options.grid()

    def attempt(job):
        try:
            return plan_source(job, grid)
        except SourceError as error:
            return (job, str(error))

    with ThreadPoolExecutor(options.workers) as pool:
        results = list(
            tqdm(
                pool.map(attempt, jobs),
                total=len(jobs),
                desc="scanning sources",
                unit="source",
                disable=not options.progress or len(jobs) < 2,
                leave=False,
            )
        )
    failures = [r for r in results if isinstance(r, tuple)]
    if failures and not options.skip_errors:
        more = f" (and {len(failures) - 1} more failing source(s))" if len(failures) > 1 else ""
        raise SourceError(f"{failures[0][1]}{more}; nothing was written (--skip-errors ingests the rest)")
    return results


class _Writer:
    """Reads tiles in order with a bounded number in flight, and commits whole sources in chunks."""

    def __init__(self, store: Store, options: IngestOptions, report: IngestReport) -> None:
        self.store, self.options, self.report = store, options, report
        self.pixels = PixelSettings(
            "none" if options.codec == "none" else options.codec, options.jpeg_quality
        )
        self.start_versions = {name: int(store.table(name).version) for name in (SOURCES, TILES, LABELS)}
        self.tiles_present = store.tile_ids()
        sources = store.read(SOURCES, columns=["source_id", "status", "uri"]).to_pylist()
        self.sources_ok = {row["source_id"]: row["uri"] for row in sources if row["status"] == "ok"}
        self.labels_present = self._labels_present()
        self.tile_rows: list[dict[str, Any]] = []
        self.label_rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.source_rows: list[dict[str, Any]] = []

    def _labels_present(self) -> dict[str, str]:
        if self.options.task is None:
            return {}
        table = self.store.table(LABELS)
        rows = table.search().where(task_predicate(self.options.task)).select(["tile_id", "label"])
        found = rows.limit(None).to_arrow()
        return dict(zip(found.column("tile_id").to_pylist(), found.column("label").to_pylist(), strict=True))

    def run(self, results: list[SourcePlan | tuple[Any, str]]) -> None:
        for result in results:
            if isinstance(result, tuple):
                self._record_failure(result[0].path, result[0].kind, result[1])
        plans = [r for r in results if not isinstance(r, tuple)]
        to_read = sum(1 for p in plans for t in p.tiles if t.tile_id not in self.tiles_present)
        bar = tqdm(
            total=to_read,
            desc="ingesting tiles",
            unit="tile",
            disable=not self.options.progress or to_read == 0,
        )
        try:
            with ThreadPoolExecutor(self.options.workers) as pool:
                self._read_in_order(pool, plans, bar)
            self._flush()
        except SourceError:
            self._rollback()
            raise
        finally:
            bar.close()

    def _read_in_order(self, pool: ThreadPoolExecutor, plans: list[SourcePlan], bar) -> None:
        pending: deque[tuple[SourcePlan, list[Future]]] = deque()
        in_flight, limit = 0, self.options.workers * 16
        for plan in plans:
            missing = [t for t in plan.tiles if t.tile_id not in self.tiles_present]
            futures = [pool.submit(read_tile, plan, tile, self.pixels) for tile in missing]
            pending.append((plan, futures))
            in_flight += len(futures)
            while in_flight > limit and len(pending) > 1:
                in_flight -= self._finish(*pending.popleft(), bar)
        while pending:
            self._finish(*pending.popleft(), bar)

    def _finish(self, plan: SourcePlan, futures: list[Future], bar) -> int:
        """Collect one source's tiles; a failed read fails the whole source. Returns futures consumed."""
        try:
            encoded = [future.result() for future in futures]
        except SourceError as error:
            for future in futures:
                future.cancel()
            plan.release()
            if not self.options.skip_errors:
                raise SourceError(
                    f"{error}; the store was left as it was (--skip-errors ingests the rest)"
                ) from None
            self._record_failure(plan.job.path, plan.job.kind, str(error))
            return len(futures)
        plan.release()
        bar.update(len(futures))
        self._add_source(plan, encoded)
        return len(futures)

    def _add_source(self, plan: SourcePlan, encoded: list[tuple[bytes | None, str | None]]) -> None:
        missing = [t for t in plan.tiles if t.tile_id not in self.tiles_present]
        groups = {key: plan.job.groups.get(key) for key in GROUP_KEYS}
        for tile, (data, fmt) in zip(missing, encoded, strict=True):
            self.tile_rows.append(
                {
                    "tile_id": tile.tile_id,
                    "source_id": plan.source_id,
                    "x": tile.x,
                    "y": tile.y,
                    "level": tile.level,
                    "size0": tile.size0,
                    "width": tile.width,
                    "height": tile.height,
                    "mpp": tile.mpp,
                    "tissue_fraction": tile.tissue_fraction,
                    **groups,
                    "pixels": data,
                    "pixel_format": fmt,
                }
            )
            self.tiles_present.add(tile.tile_id)
        self.report.tiles_added += len(missing)
        self.report.tiles_present += len(plan.tiles) - len(missing)
        self.report.label_conflicts += plan.label_conflicts
        self._add_labels(plan)
        unchanged = self.sources_ok.get(plan.source_id) == plan.row["uri"] and not missing
        if unchanged:
            self.report.sources_unchanged += 1
        else:
            self.source_rows.append(plan.row)
            self.sources_ok[plan.source_id] = plan.row["uri"]
            self.report.sources_ok += 1
        if len(self.tile_rows) >= self.options.chunk_tiles:
            self._flush()

    def _add_labels(self, plan: SourcePlan) -> None:
        task = self.options.task
        if task is None:
            return
        for tile in plan.tiles:
            if tile.label is None:
                continue
            key = (task, tile.tile_id)
            if key in self.label_rows:
                if self.label_rows[key]["label"] != tile.label:
                    self.report.label_conflicts += 1
                continue
            if self.labels_present.get(tile.tile_id) == tile.label:
                continue
            origin = plan.job.label_origin or "ingest"
            self.label_rows[key] = {
                "task": task,
                "tile_id": tile.tile_id,
                "label": tile.label,
                "origin": origin,
            }

    def _record_failure(self, path: Path, kind: str, message: str) -> None:
        self.report.sources_failed += 1
        self.report.failures.append((str(path), message))
        try:
            fingerprint = file_fingerprint(path)
        except OSError:
            fingerprint = "missing:" + str(path)
        source_id = (
            source_id_for(fingerprint) if not fingerprint.startswith("missing:") else "src_" + str(path)
        )
        if source_id in self.sources_ok:
            return  # an earlier run ingested it completely; keep that
        self.source_rows.append(
            {
                "source_id": source_id,
                "uri": str(path.resolve()),
                "kind": kind,
                "format": None,
                "width": None,
                "height": None,
                "level_count": None,
                "mpp": None,
                "mpp_origin": None,
                "fingerprint": fingerprint,
                "status": "failed",
                "error": message,
                "n_tiles": 0,
                "ingested_at": None,
            }
        )

    def _flush(self) -> None:
        """Commit buffered rows: tiles, labels, then sources, so a crash never records a partial source."""
        if self.tile_rows:
            self.store.table(TILES).add(pa.Table.from_pylist(self.tile_rows, schema=TILES_SCHEMA))
        if self.label_rows:
            upsert_labels(
                self.store, pa.Table.from_pylist(list(self.label_rows.values()), schema=LABELS_SCHEMA)
            )
            self.report.labels_written += len(self.label_rows)
            self.labels_present.update({k[1]: v["label"] for k, v in self.label_rows.items()})
        if self.source_rows:
            rows = pa.Table.from_pylist(_dedupe(self.source_rows), schema=SOURCES_SCHEMA)
            table = self.store.table(SOURCES)
            table.merge_insert("source_id").when_matched_update_all().when_not_matched_insert_all().execute(
                rows
            )
        self.tile_rows, self.label_rows, self.source_rows = [], {}, []

    def _rollback(self) -> None:
        """Put every core table back to its version from before this run."""
        for name, version in self.start_versions.items():
            table = self.store.table(name)
            if int(table.version) != version:
                table.restore(version)


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest = {row["source_id"]: row for row in rows}
    return list(latest.values())
