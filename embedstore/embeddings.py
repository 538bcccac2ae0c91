"""The one way to read stored embeddings: a query over one backbone's table, joined with tile metadata.

    query = store.embeddings("tf_efficientnet_lite0.in1k").where("split = 'train'").task("pcam")
    for batch in query.to_batches():      # RecordBatches: tile_id, view, vector, metadata..., label
        ...
    X, tile_ids, labels = query.to_numpy()
    frame = query.views(0, 1, 2).at("before-cleanup").to_polars()
    n = query.count()

Each method returns a new query; nothing is read until `to_batches`, `to_numpy`, `to_polars`,
`to_arrow` or `count`. Vectors are streamed with the Lance scanner (never the whole table at once for
batches); only the tile metadata (no pixels) of the tiles that pass `where`, and the task's labels, are
held in memory for the join. Search, probes and heads all read through this.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .catalog import Catalog
from .embedding_tables import table_name
from .errors import EmbedstoreError
from .ids import id_bytes
from .schema import EMBEDDING_PREFIX, LABELS, TILES, TILES_SCHEMA, task_predicate
from .validation import Interval, Name, SqlExpression, check_value

if TYPE_CHECKING:
    import polars as pl

# Tile metadata joined by default: everything but the pixels.
METADATA_COLUMNS = tuple(f.name for f in TILES_SCHEMA if f.name not in ("tile_id", "pixels", "pixel_format"))


class EmbeddingArrays(NamedTuple):
    """`X` float32 (n, dim), `tile_ids` (n,) and `labels` (n,) or None; unpacks as (X, tile_ids, labels)."""

    X: np.ndarray
    tile_ids: np.ndarray
    labels: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class EmbeddingQuery:
    """Stored vectors of one backbone with tile metadata; refine with where / task / views / at / columns."""

    catalog: Catalog
    table: str
    predicates: tuple[str, ...] = ()
    task_name: str | None = None
    view_ids: tuple[int, ...] | None = (0,)
    version: int | str | None = None
    metadata_columns: tuple[str, ...] = METADATA_COLUMNS

    @classmethod
    def of(cls, catalog: Catalog, backbone: str) -> EmbeddingQuery:
        """A query over the embeddings of `backbone` (a key, or a table name `emb__...`)."""
        check_value("--backbone", backbone, Name())
        name = backbone if backbone.startswith(EMBEDDING_PREFIX) else table_name(backbone)
        if not catalog.has_table(name):
            raise EmbedstoreError(
                f"no embeddings for {backbone!r} in {catalog.root}; "
                f"run `embedstore embed {catalog.root} --backbone {backbone}`"
            )
        return cls(catalog, name)

    # -- refining ---------------------------------------------------------------------------------------

    def where(self, predicate: str) -> EmbeddingQuery:
        """Keep tiles passing a SQL predicate over tile metadata, e.g. "split = 'train'" (calls AND); an
        expression that does not parse in full is refused now (see `tile_filter`)."""
        return dataclasses.replace(self, predicates=(*self.predicates, tile_filter(self.catalog, predicate)))

    def task(self, name: str) -> EmbeddingQuery:
        """Keep tiles labelled for task `name` and add their `label` column."""
        check_value("--task", name, Name())
        return dataclasses.replace(self, task_name=name)

    def views(self, *views: int) -> EmbeddingQuery:
        """Which views to read (0 = the tile itself, the default; 1.. = augmented copies)."""
        if not views:
            raise EmbedstoreError("views() needs at least one view number; use all_views() for every view")
        for view in views:
            check_value("view", view, Interval(0, integer=True))
        return dataclasses.replace(self, view_ids=tuple(views))

    def all_views(self) -> EmbeddingQuery:
        """Read every stored view of each tile."""
        return dataclasses.replace(self, view_ids=None)

    def at(self, version: int | str) -> EmbeddingQuery:
        """Read the embedding table as it was at `version` (a number or a tag)."""
        self.catalog.dataset(self.table, version)  # fail now, naming the versions that exist
        return dataclasses.replace(self, version=version)

    def columns(self, *names: str) -> EmbeddingQuery:
        """Which tile metadata columns to join (default: all but the pixels)."""
        unknown = [c for c in names if c not in METADATA_COLUMNS]
        if unknown:
            raise EmbedstoreError(
                f"unknown tile column {unknown[0]!r}; columns: {', '.join(METADATA_COLUMNS)}"
            )
        return dataclasses.replace(self, metadata_columns=tuple(names))

    # -- reading ----------------------------------------------------------------------------------------

    def to_batches(self, batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        """Stream RecordBatches: tile_id, view, vector, the metadata columns, and `label` with a task."""
        check_value("batch_size", batch_size, Interval(1, integer=True))
        dataset = self.catalog.dataset(self.table, self.version)
        metadata = self._metadata()
        return _joined(dataset, metadata, self._view_filter(), batch_size)

    def to_arrow(self) -> pa.Table:
        dataset = self.catalog.dataset(self.table, self.version)
        metadata = self._metadata()
        batches = _joined(dataset, metadata, self._view_filter(), 8192)
        return pa.Table.from_batches(list(batches), schema=_schema(dataset, metadata))

    def to_polars(self) -> pl.DataFrame:
        import polars as pl

        return pl.from_arrow(self.to_arrow())  # type: ignore[return-value]

    def to_numpy(self) -> EmbeddingArrays:
        """(X, tile_ids, labels): vectors as float32 (n, dim); labels None without a task."""
        dim = self.catalog.dataset(self.table).schema.field("vector").type.list_size
        return _arrays(self.to_batches(), dim, self.task_name is not None)

    def count(self) -> int:
        """How many rows the query gives, without reading vectors."""
        dataset = self.catalog.dataset(self.table, self.version)
        index = _IdIndex(self._metadata().column("tile_id"))
        total = 0
        for batch in dataset.to_batches(columns=["tile_id"], filter=self._view_filter()):
            total += int(index.lookup(batch.column("tile_id"))[1].sum())
        return total

    def _view_filter(self) -> str | None:
        return None if self.view_ids is None else f"view IN ({', '.join(str(v) for v in self.view_ids)})"

    def _metadata(self) -> pa.Table:
        """tile_id + the metadata columns of the tiles that pass `where` (and are labelled for the task)."""
        predicate = " AND ".join(self.predicates) or None  # each checked and parenthesised by `where`
        tiles = self.catalog.read(TILES, columns=["tile_id", *self.metadata_columns], filter=predicate)
        if self.task_name is None:
            return tiles
        labels = self.catalog.read(
            LABELS, columns=["tile_id", "label"], filter=task_predicate(self.task_name)
        )
        if labels.num_rows == 0:
            tasks = sorted(set(self.catalog.read(LABELS, columns=["task"]).column("task").to_pylist()))
            raise EmbedstoreError(
                f"no labels for task {self.task_name!r}; tasks: {', '.join(tasks) or 'none'}"
            )
        at = pc.index_in(labels.column("tile_id"), value_set=tiles.column("tile_id").combine_chunks())
        keep = pc.is_valid(at)
        return tiles.take(at.filter(keep)).append_column("label", labels.column("label").filter(keep))


def tile_filter(catalog: Catalog, predicate: str, flag: str = "--where") -> str:
    """`predicate` as the filter to give Lance for the tiles table: checked to be one SQL expression
    (`SqlExpression`), then parsed and planned (no data read) inside parentheses, so that a part Lance
    would ignore (`a = 1 b`, `a = 1 LIMIT 3`) is an error; the message shows the user's expression and
    the parser's reason, without Lance's own source paths. Returns the parenthesised expression."""
    check_value(flag, predicate, SqlExpression())
    wrapped = f"({predicate}\n)"  # the newline ends a trailing -- comment inside the parentheses
    tiles = catalog.dataset(TILES)
    try:
        tiles.scanner(columns=[], filter=wrapped).explain_plan()
    except (ValueError, OSError) as error:
        reason = _filter_error(error, tiles.schema.names)
        raise EmbedstoreError(
            f"{flag} {predicate!r} is not a filter over the tile columns: {reason}; "
            "write one SQL expression, e.g. \"dataset = 'cohort2' AND x > 100\""
        ) from None
    return wrapped


def _filter_error(error: Exception, columns: list[str]) -> str:
    """Lance's message for a bad filter, in one line: its source locations, the statement it wraps the
    filter in and the positions within that statement left out."""
    text = re.sub(r",\s*/\S+?\.rs:\d+:\d+", "", str(error)).replace("Invalid user input: ", "")
    parsed = re.search(
        r"statement: SELECT 1 FROM t WHERE \(.*\n\) \((?:sql parser error: )?(.*)\)$", text, re.S
    )
    if parsed:
        text = parsed.group(1)
    text = re.sub(r"^Error resolving filter expression \(.*\n\): ", "", text, flags=re.S)
    text = re.sub(r" at Line: \d+, Column: \d+", "", text)
    text = re.sub(
        r"^Expected: \), found: (.*)$", r"unexpected '\1' where the expression (or a parenthesis) ends", text
    )
    text = re.sub(r"Valid fields are .*", "columns: " + ", ".join(c for c in columns if c != "pixels"), text)
    return " ".join(text.split())


def _schema(dataset, metadata: pa.Table) -> pa.Schema:
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
        keys = id_bytes(ids)  # from the Arrow buffers, no Python object per id
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]

    def lookup(self, ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(row of each id, whether it was found)."""
        keys = id_bytes(ids)
        if len(self.sorted) == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        at = np.searchsorted(self.sorted, keys).clip(max=len(self.sorted) - 1)
        return self.order[at], self.sorted[at] == keys


def _joined(
    dataset, metadata: pa.Table, scan_filter: str | None, batch_size: int
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
