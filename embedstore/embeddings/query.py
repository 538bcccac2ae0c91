"""The one door to embedding tables: a query over one backbone's vectors joined with tile metadata
(`EmbeddingQuery`), and a handle on the table itself at one version (`EmbeddingTable`: ids, views, dimension,
version, provenance). No module but this one, the writers and the store's maintenance opens an `emb__` table.

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

    table = EmbeddingTable.of(catalog, "uni")          # pinned at the newest version
    table.dim, table.version, table.provenance, table.has_views()
    table.tile_ids(views=(0,))                         # the tiles embedded (view 0)
    query = table.query().tiles(some_ids)              # a query pinned at the table's version
    for X, batch in query.to_numpy_batches(): ...     # float32 (b, dim) and the RecordBatch
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.errors import EmbedstoreError
from ..core.ids import IdLookup
from ..core.schema import EMBEDDING_PREFIX, LABELS, TILES, TILES_SCHEMA, task_predicate
from ..core.validation import Interval, Name, SqlExpression, check_value
from ..storage.catalog import Catalog, HasCatalog, catalog_of
from ..storage.embedding_tables import Provenance, dtype_name, recorded_provenance, table_name

if TYPE_CHECKING:
    import polars as pl

# Tile metadata joined by default: everything but the pixels.
METADATA_COLUMNS = tuple(f.name for f in TILES_SCHEMA if f.name not in ("tile_id", "pixels", "pixel_format"))


class EmbeddingArrays(NamedTuple):
    """`X` float32 (n, dim), `tile_ids` (n,) and `labels` (n,) or None; unpacks as (X, tile_ids, labels)."""

    X: np.ndarray
    tile_ids: np.ndarray
    labels: np.ndarray | None


class VectorBatch(NamedTuple):
    """One streamed batch: `X` float32 (b, dim) and the RecordBatch it came from (tile_id, view, ...)."""

    X: np.ndarray
    batch: pa.RecordBatch


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
    tile_set: IdLookup | None = dataclasses.field(default=None, compare=False)  # restriction by `tiles`

    @classmethod
    def of(cls, store: Catalog | HasCatalog, backbone: str) -> EmbeddingQuery:
        """A query over the embeddings of `backbone` (a key, or a table name `emb__...`) in `store` (a Store
        or a Catalog)."""
        catalog = catalog_of(store)
        return cls(catalog, _existing(catalog, backbone))

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

    def tiles(self, ids: Any) -> EmbeddingQuery:
        """Keep only the tiles `ids` (an Arrow string array, a numpy array or any sequence of str; calls
        intersect)."""
        keep = IdLookup(ids)
        if self.tile_set is not None:
            keep = IdLookup(self.tile_set.sorted[keep.contains(self.tile_set.sorted)])
        return dataclasses.replace(self, tile_set=keep)

    def embedding_table(self) -> EmbeddingTable:
        """The table this query reads, at the query's version (the newest when none was set)."""
        return EmbeddingTable(self.catalog, self.table, self.catalog.dataset(self.table, self.version))

    def columns(self, *names: str) -> EmbeddingQuery:
        """Which tile metadata columns to join (default: all but the pixels)."""
        unknown = [c for c in names if c not in METADATA_COLUMNS]
        if unknown:
            raise EmbedstoreError(
                f"unknown tile column {unknown[0]!r}; columns: {', '.join(METADATA_COLUMNS)}"
            )
        return dataclasses.replace(self, metadata_columns=tuple(names))

    # -- reading ----------------------------------------------------------------------------------------

    def to_batches(self, batch_size: int = 8192, row_address: bool = False) -> Iterator[pa.RecordBatch]:
        """Stream RecordBatches: tile_id, view, vector, the metadata columns, and `label` with a task;
        with `row_address`, also each row's `row_address` in the table (uint64, for `EmbeddingTable.take`:
        valid while the row's fragment is not rewritten)."""
        check_value("batch_size", batch_size, Interval(1, integer=True))
        dataset = self._open()
        return _joined(dataset, self._metadata(), self._view_filter(), batch_size, row_address)

    def to_numpy_batches(self, batch_size: int = 8192, row_address: bool = False) -> Iterator[VectorBatch]:
        """Stream (X float32 (b, dim), the RecordBatch of `to_batches` it came from)."""
        for batch in self.to_batches(batch_size, row_address):
            yield VectorBatch(vectors(batch.column("vector")), batch)

    def to_arrow(self) -> pa.Table:
        dataset = self._open()
        metadata = self._metadata()
        batches = _joined(dataset, metadata, self._view_filter(), 8192)
        return pa.Table.from_batches(list(batches), schema=_schema(dataset, metadata))

    def to_polars(self) -> pl.DataFrame:
        import polars as pl

        return pl.from_arrow(self.to_arrow())  # type: ignore[return-value]

    def to_numpy(self) -> EmbeddingArrays:
        """(X, tile_ids, labels): vectors as float32 (n, dim); labels None without a task."""
        dataset = self._open()  # one version for the vectors and their dimension
        batches = _joined(dataset, self._metadata(), self._view_filter(), 8192)
        return _arrays(batches, _dim(dataset.schema), self.task_name is not None)

    def count(self) -> int:
        """How many rows the query gives, without reading vectors."""
        dataset = self._open()
        index = IdLookup(self._metadata().column("tile_id"))
        total = 0
        for batch in dataset.to_batches(columns=["tile_id"], filter=self._view_filter()):
            total += int(index.contains(batch.column("tile_id")).sum())
        return total

    def _open(self):
        return self.catalog.dataset(self.table, self.version)

    def _view_filter(self) -> str | None:
        return _view_filter(self.view_ids)

    def _metadata(self) -> pa.Table:
        """tile_id + the metadata columns of the tiles that pass `where` (and are labelled for the task)."""
        predicate = " AND ".join(self.predicates) or None  # each checked and parenthesised by `where`
        tiles = self.catalog.read(TILES, columns=["tile_id", *self.metadata_columns], filter=predicate)
        if self.tile_set is not None:
            tiles = tiles.filter(pa.array(self.tile_set.contains(tiles.column("tile_id"))))
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


class EmbeddingTable:
    """One embedding table at one version (all reads of a handle see that version): its ids, views,
    dimension, provenance, and queries over its vectors. `latest()` gives a handle on the newest version."""

    def __init__(self, catalog: Catalog, name: str, dataset: Any) -> None:
        self.catalog, self.name, self._dataset = catalog, name, dataset

    @classmethod
    def of(
        cls, store: Catalog | HasCatalog, backbone: str, version: int | str | None = None
    ) -> EmbeddingTable:
        """The table of `backbone` (a key, or a table name `emb__...`) in `store` (a Store or a Catalog) at
        `version` (default the newest); EmbedstoreError naming the `embed` command when there is none."""
        catalog = catalog_of(store)
        name = _existing(catalog, backbone)
        return cls(catalog, name, catalog.dataset(name, version))

    def __repr__(self) -> str:
        return f"EmbeddingTable({self.name!r}, version={self.version})"

    # -- versions ---------------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The version this handle reads."""
        return int(self._dataset.version)

    def latest_version(self) -> int:
        """The table's newest version now (the handle keeps reading its own)."""
        return int(self._dataset.latest_version)

    def latest(self) -> EmbeddingTable:
        """A handle on the newest version."""
        return EmbeddingTable(self.catalog, self.name, self.catalog.dataset(self.name))

    def at(self, version: int | str) -> EmbeddingTable:
        """A handle on `version` (a number or a tag); EmbedstoreError naming the versions that exist."""
        return EmbeddingTable(self.catalog, self.name, self.catalog.dataset(self.name, version))

    # -- what the table holds ---------------------------------------------------------------------------

    @property
    def schema(self) -> pa.Schema:
        return self._dataset.schema

    @property
    def dim(self) -> int:
        """The vectors' dimension."""
        return _dim(self.schema)

    @property
    def store_dtype(self) -> str:
        """How the vectors are stored: float32 or float16."""
        return dtype_name(self.schema.field("vector").type.value_type)

    @functools.cached_property
    def provenance(self) -> Provenance:
        """What produced the vectors; EmbedstoreError when the table records none."""
        return recorded_provenance(self.schema, self.name)

    @property
    def backbone(self) -> str:
        """The backbone key: the provenance's, else the name without its prefix."""
        found = Provenance.from_metadata(self.schema.metadata)
        return found.backbone if found else self.name[len(EMBEDDING_PREFIX) :]

    def count(self, views: tuple[int, ...] | None = None) -> int:
        """Rows (of the given views; None: every view)."""
        return int(self._dataset.count_rows(filter=_view_filter(views)))

    def has_views(self) -> bool:
        """Whether any augmented view (view > 0) is stored."""
        return self._dataset.count_rows(filter="view > 0") > 0

    def views_present(self) -> list[int]:
        """The view numbers stored (0 = the tile itself)."""
        column = self._dataset.to_table(columns=["view"]).column("view")
        return sorted(pc.unique(column).to_pylist())

    def tile_ids(self, views: tuple[int, ...] | None = (0,)) -> pa.ChunkedArray:
        """The tile ids of the rows of the given views (default view 0: each embedded tile once)."""
        return self._dataset.to_table(columns=["tile_id"], filter=_view_filter(views)).column("tile_id")

    def to_batches(
        self,
        columns: tuple[str, ...] = ("tile_id", "view"),
        views: tuple[int, ...] | None = None,
        batch_size: int = 8192,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the table's own columns (no join with tile metadata), e.g. ids and views."""
        return self._dataset.to_batches(
            columns=list(columns), filter=_view_filter(views), batch_size=batch_size
        )

    def query(self) -> EmbeddingQuery:
        """A query over the vectors at this handle's version."""
        return EmbeddingQuery(self.catalog, self.name, version=self.version)

    def take(self, row_addresses: np.ndarray) -> np.ndarray:
        """float32 (n, dim) vectors of the rows at `row_addresses` (from `to_batches(row_address=True)`),
        in the order given; reads only those rows."""
        addresses = np.asarray(row_addresses, dtype=np.uint64)
        if len(addresses) == 0:
            return np.empty((0, self.dim), np.float32)
        unique, inverse = np.unique(addresses, return_inverse=True)  # sorted: fewer, ordered reads
        table = self._dataset._take_rows(pa.array(unique, pa.uint64()), columns=["vector"])
        if table.num_rows != len(unique):
            raise EmbedstoreError(
                f"{self.name} v{self.version}: {len(unique) - table.num_rows} of {len(unique)} row addresses "
                "name no row (the table was rewritten); rebuild the index"
            )
        return vectors(table.column("vector"))[inverse.reshape(-1)]

    def fragment_marks(self) -> dict[int, tuple[int, str]]:
        """fragment id -> (physical rows, deletion file): while a fragment's mark is unchanged, the row
        addresses into it still name the same rows."""
        marks = {}
        for fragment in self._dataset.get_fragments():
            meta = fragment.metadata
            deletion = meta.deletion_file
            marks[int(fragment.fragment_id)] = (
                int(meta.physical_rows or 0),
                "" if deletion is None else str(deletion),
            )
        return marks

    def row_addresses(self, tile_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """(row address of each of `tile_ids` in view 0, found mask): one pass over ids, no vectors."""
        order = IdLookup(tile_ids)
        out = np.zeros(len(tile_ids), np.uint64)
        found = np.zeros(len(tile_ids), bool)
        for batch in self._dataset.to_batches(
            columns=["tile_id"], filter=_view_filter((0,)), with_row_address=True
        ):
            ids = batch.column("tile_id")
            at, known = order.find(ids)
            out[at[known]] = batch.column("_rowaddr").to_numpy()[known]
            found[at[known]] = True
        return out, found


def vectors(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A vector column (fixed-size lists) as float32 (n, dim): the one conversion of vectors to numpy."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, column.type.list_size).astype(np.float32, copy=False)


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


def _schema(dataset, metadata: pa.Table, row_address: bool = False) -> pa.Schema:
    own = dataset.schema
    fields = [own.field("tile_id"), own.field("view"), own.field("vector")]
    fields += [pa.field("row_address", pa.uint64())] if row_address else []
    fields += [f for f in metadata.schema if f.name != "tile_id"]
    return pa.schema(fields, metadata=own.metadata)


def _joined(
    dataset, metadata: pa.Table, scan_filter: str | None, batch_size: int, row_address: bool = False
) -> Iterator[pa.RecordBatch]:
    """Stream (tile_id, view, vector[, row_address]) and attach each row's metadata; rows without metadata
    are dropped."""
    schema = _schema(dataset, metadata, row_address)
    index = IdLookup(metadata.column("tile_id"))  # built once; O(batch log n) per batch
    extra = metadata.drop_columns(["tile_id"]).combine_chunks()
    scanner = dataset.to_batches(
        columns=["tile_id", "view", "vector"],
        filter=scan_filter,
        batch_size=batch_size,
        with_row_address=row_address,
    )
    for batch in scanner:
        rows, found = index.find(batch.column("tile_id"))
        if not found.all():
            batch, rows = batch.filter(pa.array(found)), rows[found]
        if batch.num_rows == 0:
            continue
        attached = extra.take(pa.array(rows))
        columns = [attached.column(i).combine_chunks() for i in range(attached.num_columns)]
        yield pa.RecordBatch.from_arrays([*batch.columns, *columns], schema=schema)


def _arrays(batches: Iterator[pa.RecordBatch], dim: int, with_labels: bool) -> EmbeddingArrays:
    vectors_, ids, labels = [], [], []
    for batch in batches:
        vectors_.append(vectors(batch.column("vector")))
        ids.append(batch.column("tile_id").to_numpy(zero_copy_only=False))
        if with_labels:
            labels.append(batch.column("label").to_numpy(zero_copy_only=False))
    X = np.concatenate(vectors_) if vectors_ else np.empty((0, dim), np.float32)
    tile_ids = np.concatenate(ids) if ids else np.empty(0, object)
    if not with_labels:
        return EmbeddingArrays(X, tile_ids, None)
    return EmbeddingArrays(X, tile_ids, np.concatenate(labels) if labels else np.empty(0, object))


def _existing(catalog: Catalog, backbone: str) -> str:
    """The table name of `backbone` (a key or a table name); EmbedstoreError naming `embed` if absent."""
    check_value("--backbone", backbone, Name())
    name = backbone if backbone.startswith(EMBEDDING_PREFIX) else table_name(backbone)
    if not catalog.has_table(name):
        raise EmbedstoreError(
            f"no embeddings for {backbone!r} in {catalog.root}; "
            f"run `embedstore embed {catalog.root} --backbone {backbone}`"
        )
    return name


def _view_filter(views: tuple[int, ...] | None) -> str | None:
    return None if views is None else f"view IN ({', '.join(str(v) for v in views)})"


def _dim(schema: pa.Schema) -> int:
    return schema.field("vector").type.list_size
