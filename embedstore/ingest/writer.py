"""Committing ingested sources: the contract every ingest executor (local, distributed) shares.

`IngestWriter` takes whole sources (their planned tiles and encoded pixels) and commits them in chunks:
tiles, then labels, then files, then sources, so a crash never records a source whose tiles are not
all in. Every row goes in by its key (`embedstore.storage.keyed_writes`): re-running adds nothing, and
processes ingesting the same data at once end with one row per key. `rollback` takes this run's committed rows
back out (by key, leaving other writers' rows alone) when a source fails without --skip-errors.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..core.ids import file_fingerprint, source_id_for
from ..core.schema import (
    FILES,
    FILES_SCHEMA,
    GROUP_KEYS,
    LABELS,
    LABELS_SCHEMA,
    SOURCES,
    SOURCES_SCHEMA,
    TILES,
    TILES_SCHEMA,
    label_key,
    sql_string,
    task_predicate,
)
from ..storage.catalog import Catalog
from .options import IngestReport
from .planning import SourcePlan, TilePlan


class IngestWriter:
    """Buffers whole sources and commits them in chunks of about `chunk_tiles` tiles."""

    def __init__(self, catalog: Catalog, task: str | None, report: IngestReport, chunk_tiles: int) -> None:
        self.catalog, self.task, self.report, self.chunk_tiles = catalog, task, report, chunk_tiles
        self.tiles_present = catalog.tile_ids()
        self.sources_before = {r["source_id"]: r for r in catalog.read(SOURCES).to_pylist()}
        self.sources_ok = {sid: r["uri"] for sid, r in self.sources_before.items() if r["status"] == "ok"}
        self.files_before = {r["uri"]: r for r in catalog.read(FILES).to_pylist()}
        self.labels_before: dict[str, dict[str, Any]] = {}
        if task is not None:
            rows = catalog.read(LABELS, filter=task_predicate(task)).to_pylist()
            self.labels_before = {r["row_key"]: r for r in rows}
        self._tiles: list[dict[str, Any]] = []
        self._labels: dict[str, dict[str, Any]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._sources: dict[str, dict[str, Any]] = {}
        self._committed = _Committed()

    # -- what the executor hands in ----------------------------------------------------------------------

    def missing_tiles(self, plan: SourcePlan) -> list[TilePlan]:
        """The plan's tiles the store does not hold yet (the ones to read)."""
        return [tile for tile in plan.tiles if tile.tile_id not in self.tiles_present]

    def add_source(
        self, plan: SourcePlan, missing: list[TilePlan], encoded: list[tuple[bytes | None, str | None]]
    ) -> None:
        """A source whose missing tiles were read (`encoded` in the order of `missing`)."""
        groups = {key: plan.job.groups.get(key) for key in GROUP_KEYS}
        for tile, (data, fmt) in zip(missing, encoded, strict=True):
            self._tiles.append(_tile_row(plan, tile, groups, data, fmt))
            self.tiles_present.add(tile.tile_id)
        self._add_labels(plan)
        new_files = self._add_files(plan)
        unchanged = self.sources_ok.get(plan.source_id) == plan.row["uri"] and not missing and not new_files
        if unchanged:
            self.report.sources_unchanged += 1
        else:
            self._sources[plan.source_id] = plan.row
            self.sources_ok[plan.source_id] = plan.row["uri"]
            self.report.sources_ok += 1
        self.report.tiles_present += len(plan.tiles) - len(missing)
        if len(self._tiles) >= self.chunk_tiles:
            self.flush()

    def add_failure(self, path: Path, kind: str, message: str) -> None:
        """A source that could not be planned or read (recorded unless an earlier run ingested it, or
        recorded this same failure: a re-run that finds nothing new writes no version)."""
        self.report.sources_failed += 1
        self.report.failures.append((str(path), message))
        try:
            fingerprint = file_fingerprint(path)
            source_id = source_id_for(fingerprint)
        except OSError:
            fingerprint, source_id = "missing:" + str(path), "src_" + str(path)
        if source_id in self.sources_ok:
            return  # an earlier run ingested it completely; keep that
        row = {
            **{field.name: None for field in SOURCES_SCHEMA},
            "source_id": source_id,
            "uri": str(path.resolve()),
            "kind": kind,
            "fingerprint": fingerprint,
            "status": "failed",
            "error": message,
            "n_tiles": 0,
        }
        if self.sources_before.get(source_id) != row:  # else recorded already, with the same error
            self._sources[source_id] = row

    # -- committing -------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit buffered rows: tiles, labels, files, then sources (a source row: all its tiles are in)."""
        if self._tiles:
            rows = pa.Table.from_pylist(self._tiles, schema=TILES_SCHEMA)
            inserted = self.catalog.insert_missing(TILES, rows)
            self._committed.tiles += [row["tile_id"] for row in self._tiles]
            self.report.tiles_added += inserted
            self.report.tiles_present += len(self._tiles) - inserted
        if self._labels:
            self.catalog.upsert(
                LABELS, pa.Table.from_pylist(list(self._labels.values()), schema=LABELS_SCHEMA)
            )
            self._committed.labels.update(self._labels)
            self.report.labels_written += len(self._labels)
        if self._files:
            self.catalog.upsert(FILES, pa.Table.from_pylist(list(self._files.values()), schema=FILES_SCHEMA))
            self._committed.files.update(self._files)
            self.report.files_recorded += len(self._files)
        if self._sources:
            rows = pa.Table.from_pylist(list(self._sources.values()), schema=SOURCES_SCHEMA)
            self.catalog.upsert(SOURCES, rows)
            self._committed.sources.update(self._sources)
        self._tiles, self._labels, self._files, self._sources = [], {}, {}, {}

    def rollback(self) -> None:
        """Take this run's committed rows back out: new keys deleted, replaced rows put back."""
        done = self._committed
        if done.tiles:
            self.catalog.delete(TILES, _in("tile_id", done.tiles))
        _put_back(self.catalog, LABELS, LABELS_SCHEMA, "row_key", done.labels, self.labels_before)
        _put_back(self.catalog, FILES, FILES_SCHEMA, "uri", done.files, self.files_before)
        _put_back(self.catalog, SOURCES, SOURCES_SCHEMA, "source_id", done.sources, self.sources_before)
        self._committed = _Committed()

    # -- rows ---------------------------------------------------------------------------------------------

    def _add_labels(self, plan: SourcePlan) -> None:
        if self.task is None:
            return
        for tile in plan.tiles:
            key = label_key(self.task, tile.tile_id)
            if tile.label is None or key in self._labels:
                continue
            before = self._committed.labels.get(key) or self.labels_before.get(key)
            if before is not None and before["label"] == tile.label:
                continue
            self._labels[key] = {
                "row_key": key,
                "task": self.task,
                "tile_id": tile.tile_id,
                "label": tile.label,
                "origin": plan.job.label_origin or "ingest",
            }

    def _add_files(self, plan: SourcePlan) -> int:
        """Record each of the plan's files (the copies too); returns how many are new or moved."""
        new = 0
        for uri in plan.files:
            before = self._committed.files.get(uri) or self.files_before.get(uri)
            if (before is None or before["source_id"] != plan.source_id) and uri not in self._files:
                self._files[uri] = {"uri": uri, "source_id": plan.source_id, "ingested_at": datetime.now(UTC)}
                new += 1
        return new


class _Committed:
    """What this run has committed, for rollback."""

    def __init__(self) -> None:
        self.tiles: list[str] = []
        self.labels: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, dict[str, Any]] = {}


def _tile_row(
    plan: SourcePlan, tile: TilePlan, groups: dict[str, Any], data: bytes | None, fmt: str | None
) -> dict[str, Any]:
    return {
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


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


def _put_back(
    catalog: Catalog,
    name: str,
    schema: pa.Schema,
    key: str,
    written: dict[str, dict[str, Any]],
    before: dict[str, dict[str, Any]],
) -> None:
    """Delete the keys this run added to a table and restore the rows it replaced."""
    added = [k for k in written if k not in before]
    replaced = [before[k] for k in written if k in before]
    if added:
        catalog.delete(name, _in(key, added))
    if replaced:
        catalog.upsert(name, pa.Table.from_pylist(replaced, schema=schema))
