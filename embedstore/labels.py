"""Importing labels for tiles already in the store, from a CSV or Parquet file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from .catalog import Catalog
from .errors import EmbedstoreError
from .schema import LABELS, LABELS_SCHEMA, SOURCES, TILES, label_key
from .tabular import read_table
from .validation import Name, check_value


def import_labels(catalog: Catalog, task: str, path: Path) -> int:
    """Write (task, tile_id, label) rows; every row must name an existing tile. Returns rows written."""
    check_value("--task", task, Name())
    catalog.require_writable()
    frame = read_table(path)
    if "label" not in frame.columns:
        raise EmbedstoreError(f"{path}: no 'label' column (has: {', '.join(frame.columns)})")
    if "tile_id" in frame.columns:
        tile_ids = [str(v) for v in frame.get_column("tile_id").to_list()]
        known = catalog.tile_ids()
        unknown = [t for t in tile_ids if t not in known]
    elif {"source", "x", "y"} <= set(frame.columns):
        tile_ids, unknown = _ids_from_positions(catalog, frame)
    else:
        raise EmbedstoreError(
            f"{path}: needs a tile_id column, or source, x, y columns (has: {', '.join(frame.columns)})"
        )
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise EmbedstoreError(
            f"{path}: {len(unknown)} row(s) name tiles that are not in the store ({shown}); "
            "ingest them first or fix the file; nothing was written"
        )
    labels = [None if v is None else str(v) for v in frame.get_column("label").to_list()]
    rows = {tile_id: label for tile_id, label in zip(tile_ids, labels, strict=True)}
    table = pa.Table.from_pylist(
        [
            {"row_key": label_key(task, t), "task": task, "tile_id": t, "label": lab, "origin": "import"}
            for t, lab in rows.items()
        ],
        schema=LABELS_SCHEMA,
    )
    catalog.upsert(LABELS, table)
    return table.num_rows


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
        source_id = by_name.get(str(source)) or by_name.get(Path(str(source)).name)
        tile_id = position.get((source_id, int(x), int(y))) if source_id else None
        if tile_id is None:
            unknown.append(f"{source}@{x},{y}")
        tile_ids.append(tile_id or "")
    return tile_ids, unknown
