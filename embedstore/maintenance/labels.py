"""Importing labels for tiles already in the store, from a CSV or Parquet file.

Labels (and tile ids, source names) are text exactly as written; rows with an empty label are refused
(or skipped with `skip_empty_labels`); rows giving one tile different labels are settled by
`on_label_conflict`. Every check runs before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from ..core.errors import EmbedstoreError, a_few
from ..core.schema import LABELS, LABELS_SCHEMA, SOURCES, TILES, label_key
from ..core.tabular import read_table, with_numbers
from ..core.validation import FileName, check_value, options_from
from ..storage.catalog import Catalog
from .label_options import (
    Claims,
    LabelImportOptions,
    LabelImportReport,
    empty_labels_error,
    is_empty_label,
    settle_conflict,
)


def import_labels(
    catalog: Catalog, task: str, path: Path, options: LabelImportOptions | None = None, **kwargs: Any
) -> LabelImportReport:
    """Write (task, tile_id, label) rows; every row must name an existing tile.
    A new task's name follows `FileName` (it goes into head names and printed commands)."""
    check_value("--task", task, FileName())
    options = options_from(LabelImportOptions, options, kwargs)
    catalog.require_writable()
    frame = read_table(path)
    if "label" not in frame.columns:
        raise EmbedstoreError(f"{path}: no 'label' column (has: {', '.join(frame.columns)})")
    tile_ids = _tile_ids(catalog, path, frame)
    labels = frame.get_column("label").to_list()
    report = LabelImportReport(task)
    empty = [row for row, label in enumerate(labels, start=1) if is_empty_label(label)]
    if empty and not options.skip_empty_labels:
        raise empty_labels_error(path, "label", empty, "import the other rows")
    report.labels_skipped_empty = len(empty)
    claims: dict[str, Claims] = {}
    for row, (tile_id, label) in enumerate(zip(tile_ids, labels, strict=True), start=1):
        if not is_empty_label(label):
            claims.setdefault(tile_id, []).append((label, f"{path.name} row {row}"))
    kept = _settle(claims, task, options.on_label_conflict, report)
    if kept:
        catalog.upsert(LABELS, _label_rows(task, kept))
    report.labels_written = len(kept)
    return report


def _tile_ids(catalog: Catalog, path: Path, frame: pl.DataFrame) -> list[str]:
    """The tile id of every row (by tile_id, or by source, x, y); refuses rows naming unknown tiles."""
    if "tile_id" in frame.columns:
        tile_ids = [value or "" for value in frame.get_column("tile_id").to_list()]
        known = catalog.tile_ids()
        unknown = [t or "(empty)" for t in tile_ids if t not in known]
    elif {"source", "x", "y"} <= set(frame.columns):
        tile_ids, unknown = _ids_from_positions(catalog, with_numbers(path, frame, ["x", "y"]))
    else:
        raise EmbedstoreError(
            f"{path}: needs a tile_id column, or source, x, y columns (has: {', '.join(frame.columns)})"
        )
    if unknown:
        shown = a_few(unknown)
        raise EmbedstoreError(
            f"{path}: {len(unknown)} row(s) name tiles that are not in the store ({shown}); "
            "ingest them first or fix the file; nothing was written"
        )
    return tile_ids


def _settle(claims: dict[str, Claims], task: str, policy: str, report: LabelImportReport) -> dict[str, str]:
    """tile id -> the label to write; tiles whose rows disagree are settled by `policy` and reported."""
    kept: dict[str, str] = {}
    for tile_id, tile_claims in claims.items():
        conflict = settle_conflict(tile_id, task, tile_claims, policy)
        if conflict is not None:
            report.label_conflicts.append(conflict)
        label = tile_claims[0][0] if conflict is None else conflict["kept"]
        if label is not None:
            kept[tile_id] = label
    return kept


def _label_rows(task: str, labels: dict[str, str]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"row_key": label_key(task, t), "task": task, "tile_id": t, "label": lab, "origin": "import"}
            for t, lab in labels.items()
        ],
        schema=LABELS_SCHEMA,
    )


def _ids_from_positions(catalog: Catalog, frame: pl.DataFrame) -> tuple[list[str], list[str]]:
    """Tile ids for rows that name a source (source id, path or file name) and a tile's x, y."""
    sources = catalog.read(SOURCES, columns=["source_id", "uri", "status"]).to_pylist()
    by_name: dict[str, str] = {}
    for row in sources:
        if row["status"] != "ok":
            continue
        uri = Path(row["uri"])
        for name in (row["source_id"], str(uri), uri.name):
            by_name.setdefault(name, row["source_id"])
    tiles = catalog.read(TILES, columns=["tile_id", "source_id", "x", "y"])
    position = {
        (s, x, y): t
        for t, s, x, y in zip(
            *(tiles.column(c).to_pylist() for c in ("tile_id", "source_id", "x", "y")), strict=True
        )
    }
    tile_ids, unknown = [], []
    for source, x, y in frame.select(["source", "x", "y"]).iter_rows():
        source = source or ""
        source_id = by_name.get(source) or by_name.get(Path(source).name)
        whole = x.is_integer() and y.is_integer()
        tile_id = position.get((source_id, int(x), int(y))) if source_id and whole else None
        if tile_id is None:
            unknown.append(f"{source}@{x:g},{y:g}")
        tile_ids.append(tile_id or "")
    return tile_ids, unknown
