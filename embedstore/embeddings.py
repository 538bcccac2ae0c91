"""Reading embeddings back: streamed Arrow batches joined with tile metadata and, per task, labels.

The vectors are streamed with the Lance scanner (never the whole table at once); only the tile metadata
(no pixels) and the task's labels are held in memory for the join.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .embedding_tables import table_name
from .errors import EmbedstoreError
from .schema import EMBEDDING_PREFIX, LABELS, TILES, TILES_SCHEMA, task_predicate

if TYPE_CHECKING:
    import polars as pl

    from .store import Store

OUTPUTS = ("batches", "polars", "numpy")
# Tile metadata joined by default: everything but the pixels.
METADATA_COLUMNS = tuple(f.name for f in TILES_SCHEMA if f.name not in ("tile_id", "pixels", "pixel_format"))


class EmbeddingArrays(NamedTuple):
    """`X` float32 (n, dim), `tile_ids` (n,) and `labels` (n,) or None; unpacks as (X, tile_ids, labels)."""

    X: np.ndarray
    tile_ids: np.ndarray
    labels: np.ndarray | None


def embeddings(
    store: Store,
    key: str,
    columns: Sequence[str] | None = None,
    filter: str | None = None,
    task: str | None = None,
    views: Sequence[int] | None = (0,),
    batch_size: int = 8192,
    version: int | str | None = None,
    as_: str = "batches",
) -> Iterator[pa.RecordBatch] | pl.DataFrame | EmbeddingArrays:
    """Vectors of backbone `key` (or table `emb__...`) with tile metadata.

    columns: tile metadata columns to join (default: all but the pixels); filter: a SQL predicate over the
    tiles table (e.g. "split = 'train'"); task: keep labelled tiles only and add their `label`;
    views: which views (None: all); version: the embedding table's version (number or tag);
    as_: "batches" (an iterator of RecordBatches: tile_id, view, vector, metadata..., label),
    "polars" (a DataFrame) or "numpy" (EmbeddingArrays).
    """
    if as_ not in OUTPUTS:
        raise EmbedstoreError(f"as_={as_!r}: use one of {', '.join(OUTPUTS)}")
    if batch_size < 1:
        raise EmbedstoreError(f"batch_size {batch_size} must be at least 1")
    name = key if key.startswith(EMBEDDING_PREFIX) else table_name(key)
    if name not in store.table_names():
        raise EmbedstoreError(
            f"no embeddings for {key!r} in {store.root}; run `embedstore embed STORE --backbone {key}`"
        )
    dataset = store.table(name, version).to_lance()
    metadata = _metadata(store, list(METADATA_COLUMNS if columns is None else columns), filter, task)
    scan_filter = None if views is None else f"view IN ({', '.join(str(int(v)) for v in views)})"
    batches = _joined(dataset, metadata, scan_filter, batch_size)
    if as_ == "batches":
        return batches
    if as_ == "polars":
        import polars as pl

        return pl.from_arrow(pa.Table.from_batches(list(batches), schema=_schema(dataset, metadata)))
    return _arrays(batches, dataset.schema.field("vector").type.list_size, task is not None)


def _metadata(store: Store, columns: list[str], filter: str | None, task: str | None) -> pa.Table:
    """tile_id + the asked-for columns of the tiles that pass the filter (and have a label for `task`)."""
    unknown = [c for c in columns if c not in TILES_SCHEMA.names or c == "tile_id"]
    if unknown:
        raise EmbedstoreError(f"unknown tile column {unknown[0]!r}; columns: {', '.join(METADATA_COLUMNS)}")
    try:
        tiles = store.table(TILES).to_lance().to_table(columns=["tile_id", *columns], filter=filter)
    except (ValueError, OSError) as error:
        first = str(error).splitlines()[0]
        raise EmbedstoreError(f"bad filter {filter!r} ({first}); use SQL over the tiles columns") from None
    if task is None:
        return tiles
    labels = (
        store.table(LABELS).to_lance().to_table(columns=["tile_id", "label"], filter=task_predicate(task))
    )
    if labels.num_rows == 0:
        tasks = sorted(set(store.read(LABELS, columns=["task"]).column("task").to_pylist()))
        raise EmbedstoreError(f"no labels for task {task!r}; tasks: {', '.join(tasks) or 'none'}")
    at = pc.index_in(labels.column("tile_id"), value_set=tiles.column("tile_id").combine_chunks())
    keep = pc.is_valid(at)
    return tiles.take(at.filter(keep)).append_column("label", labels.column("label").filter(keep))


def _schema(dataset: Any, metadata: pa.Table) -> pa.Schema:
    own = dataset.schema
    fields = [own.field("tile_id"), own.field("view"), own.field("vector")]
    fields += [f for f in metadata.schema if f.name != "tile_id"]
    return pa.schema(fields, metadata=own.metadata)


class _IdIndex:
    """Row positions of tile ids in the metadata, by binary search over the sorted ids.

    Built once (O(n log n)); each batch then costs O(batch log n), where a hash join against the whole
    metadata would rebuild its hash table for every batch.
    """

    def __init__(self, ids: pa.ChunkedArray | pa.Array) -> None:
        keys = _as_bytes(ids)
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]

    def lookup(self, ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(row of each id, whether it was found)."""
        keys = _as_bytes(ids)
        if len(self.sorted) == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        at = np.searchsorted(self.sorted, keys).clip(max=len(self.sorted) - 1)
        return self.order[at], self.sorted[at] == keys


def _as_bytes(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return ids.cast(pa.binary()).to_numpy(zero_copy_only=False).astype("S")


def _joined(
    dataset: Any, metadata: pa.Table, scan_filter: str | None, batch_size: int
) -> Iterator[pa.RecordBatch]:
    """Stream (tile_id, view, vector) and attach each row's metadata; rows without metadata are dropped."""
    schema = _schema(dataset, metadata)
    index = _IdIndex(metadata.column("tile_id"))
    extra = metadata.drop_columns(["tile_id"]).combine_chunks()
    scanner = dataset.to_batches(
        columns=["tile_id", "view", "vector"], filter=scan_filter, batch_size=batch_size
    )
    for batch in scanner:
        rows, found = index.lookup(batch.column("tile_id"))
        if not found.all():
            batch, rows = batch.filter(pa.array(found)), rows[found]
        if batch.num_rows == 0:
            continue
        attached = extra.take(pa.array(rows))
        columns = [attached.column(i).combine_chunks() for i in range(attached.num_columns)]
        yield pa.RecordBatch.from_arrays([*batch.columns, *columns], schema=schema)


def _arrays(batches: Iterator[pa.RecordBatch], dim: int, with_labels: bool) -> EmbeddingArrays:
    vectors, ids, labels = [], [], []
    for batch in batches:
        flat = batch.column("vector").values.to_numpy(zero_copy_only=False)
        vectors.append(flat.reshape(-1, dim).astype(np.float32, copy=False))
        ids.append(batch.column("tile_id").to_numpy(zero_copy_only=False))
        if with_labels:
            labels.append(batch.column("label").to_numpy(zero_copy_only=False))
    X = np.concatenate(vectors) if vectors else np.empty((0, dim), np.float32)
    tile_ids = np.concatenate(ids) if ids else np.empty(0, object)
    if not with_labels:
        return EmbeddingArrays(X, tile_ids, None)
    return EmbeddingArrays(X, tile_ids, np.concatenate(labels) if labels else np.empty(0, object))
