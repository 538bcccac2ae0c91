"""Upgrading a store written by embedstore 0.1 (format 1) to format 2, in place.

Format 2 declares one key column per table (what keeps concurrent writers from duplicating rows, see
`embedstore.storage.keyed_writes`), adds `row_key` to the labels and embedding tables, and adds the `files`
table. Each table gets one new version (old versions and tags stay readable); the marker is rewritten last,
so an interrupted upgrade is simply run again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import lance
import pyarrow as pa
import pyarrow.compute as pc

from ..core.errors import NotAStoreError
from ..core.location import ObjectPath, StorePath, require_writable, store_location
from ..core.schema import (
    EMBEDDING_PREFIX,
    FILES,
    FILES_SCHEMA,
    LABELS,
    MARKER_FILE,
    ROW_KEY,
    ROW_KEY_SEPARATOR,
    SOURCES,
    STORE_FORMAT_VERSION,
    TILES,
    declared_key,
    key_field,
)
from ..storage.catalog import Catalog, read_marker
from ..storage.keyed_writes import create_table


def upgrade(path: str | Path) -> list[str]:
    """Upgrade the store at `path` to the current format; returns what was done, one line per step."""
    root = store_location(path)
    marker = read_marker(root, path)
    version = marker.get("format_version")
    if version == STORE_FORMAT_VERSION:
        return [f"{root} already has store format {version}; nothing to do"]
    if version != 1:
        raise NotAStoreError(f"{root} has store format {version}; this embedstore upgrades format 1 only")
    require_writable(root)
    done = []
    for name in (SOURCES, TILES):
        dataset = lance.dataset(str(root / f"{name}.lance"))
        key = "source_id" if name == SOURCES else "tile_id"
        if declared_key(dataset.schema) != key:
            dataset.update_field_metadata({key: {"lance-schema:unenforced-primary-key": "true"}})
            done.append(f"{name}: {key} declared as the key")
    tables: list[StorePath] = sorted(root.glob("*.lance"))
    for table in tables:
        name = table.name[: -len(".lance")]
        if name == LABELS:
            done.append(_add_row_key(table, ("tile_id", "task")))
        elif name.startswith(EMBEDDING_PREFIX):
            done.append(_add_row_key(table, ("tile_id", "view")))
    if not (root / f"{FILES}.lance").exists():
        create_table(root, FILES, FILES_SCHEMA)
        catalog = Catalog(root)
        sources = catalog.read(SOURCES, columns=["uri", "source_id", "ingested_at"], filter="status = 'ok'")
        catalog.insert_missing(FILES, sources.select(FILES_SCHEMA.names).cast(FILES_SCHEMA))
        done.append(f"{FILES}: created with the {sources.num_rows} file(s) of the sources table")
    marker["format_version"] = STORE_FORMAT_VERSION
    text = json.dumps(marker, indent=2) + "\n"
    if isinstance(root, ObjectPath):
        (root / MARKER_FILE).write_text(text)  # one PUT: atomic
    else:
        partial = root / (MARKER_FILE + ".part")
        partial.write_text(text)
        partial.replace(root / MARKER_FILE)
    done.append(f"store format {version} -> {STORE_FORMAT_VERSION}")
    return done


def _add_row_key(table: Path | ObjectPath, parts: tuple[str, str]) -> str:
    """Rewrite a table as one new version with `row_key` = part0 + ":" + part1 as its declared key."""
    dataset = lance.dataset(str(table))
    name = table.name[: -len(".lance")]
    if ROW_KEY in dataset.schema.names:
        return f"{name}: already has {ROW_KEY}"
    schema = pa.schema([key_field(ROW_KEY), *dataset.schema], metadata=dataset.schema.metadata)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in dataset.to_batches():
            first, second = (pc.cast(batch.column(p), pa.string()) for p in parts)
            key = pc.binary_join_element_wise(first, second, ROW_KEY_SEPARATOR)
            yield pa.RecordBatch.from_arrays([key, *batch.columns], schema=schema)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    lance.write_dataset(reader, str(table), schema=schema, mode="overwrite")
    return f"{name}: {ROW_KEY} added ({dataset.count_rows()} rows) and declared as the key"
