"""Writing vectors into an `emb__<key>` table: the contract every executor (local, distributed) shares.

`EmbeddingWriter.write` commits one batch of (tile, view, vector) rows atomically, each (tile, view) at
most once whatever other processes write at the same time (`embedstore.storage.keyed_writes`). The first write
creates the table; when another process created it first, its provenance must match this run's.
`ChunkedWriter` is the local executor's front: it buffers rows into chunks and keeps one commit in
flight on a background thread while the model runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.schema import ROW_KEY_SEPARATOR
from ..storage.catalog import Catalog
from ..storage.embedding_tables import Provenance, check_compatible, embedding_schema, recorded_provenance
from .options import EmbedProgress


class EmbeddingWriter:
    """Commits rows to one embedding table, creating it (with this provenance) on the first write."""

    def __init__(self, catalog: Catalog, name: str, provenance: Provenance, views: int = 0) -> None:
        self.catalog, self.name, self.provenance, self.views = catalog, name, provenance, views
        self.schema = embedding_schema(provenance)
        self.dim = provenance.dim
        self._table_checked = False

    def write(self, tile_ids: Sequence[str], views: np.ndarray, vectors: np.ndarray) -> int:
        """Commit the rows whose (tile, view) the table lacks; returns how many this call inserted."""
        if not self._table_checked:  # made by this run, or by another process since this run began
            table = self.catalog.create_table(self.name, self.schema)
            check_compatible(
                recorded_provenance(table.schema, self.name), self.provenance, self.name, self.views
            )
            self._table_checked = True
        ids = pa.array(list(tile_ids), pa.string())
        view_array = pa.array(np.asarray(views, dtype=np.int16), pa.int16())
        flat = np.ascontiguousarray(vectors).reshape(-1)
        rows = pa.table(
            [
                pc.binary_join_element_wise(ids, pc.cast(view_array, pa.string()), ROW_KEY_SEPARATOR),
                ids,
                view_array,
                pa.FixedSizeListArray.from_arrays(pa.array(flat), self.dim),
            ],
            schema=self.schema,
        )
        return self.catalog.insert_missing(self.name, rows)


class ChunkedWriter:
    """Buffers rows into chunks of `chunk_rows` and commits each on a thread, one commit in flight."""

    def __init__(
        self,
        writer: EmbeddingWriter,
        total: int,
        on_chunk: Callable[[EmbedProgress], None] | None,
        chunk_rows: int = 4096,
    ) -> None:
        self.writer, self.total, self.on_chunk, self.chunk_rows = writer, total, on_chunk, chunk_rows
        self.rows_written = 0  # inserted by this run
        self.rows_elsewhere = 0  # computed here, but another process had written them meanwhile
        self._tiles: set[str] = set()
        self._ids: list[str] = []
        self._views: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []
        self._buffered = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed-writer")
        self._pending: tuple[Future, int, list[str]] | None = None

    @property
    def name(self) -> str:
        return self.writer.name

    @property
    def tiles_written(self) -> int:
        return len(self._tiles)

    def add(self, tile_ids: list[str], views: np.ndarray, vectors: np.ndarray) -> None:
        self._ids += tile_ids
        self._views.append(views)
        self._vectors.append(vectors)
        self._buffered += len(tile_ids)
        if self._buffered >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered rows to the commit thread (after the previous commit has finished)."""
        self._wait()
        if not self._buffered:
            return
        ids, views, vectors = self._ids, np.concatenate(self._views), np.concatenate(self._vectors)
        self._pending = (self._pool.submit(self.writer.write, ids, views, vectors), len(ids), ids)
        self._ids, self._views, self._vectors, self._buffered = [], [], [], 0

    def close(self) -> None:
        """Wait for the commit in flight (never leave half a run's bookkeeping behind), then stop."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def _wait(self) -> None:
        if self._pending is None:
            return
        future, rows, ids = self._pending
        self._pending = None
        inserted = future.result()
        self.rows_written += inserted
        self.rows_elsewhere += rows - inserted
        self._tiles.update(ids)
        if self.on_chunk is not None:
            self.on_chunk(EmbedProgress(self.name, self.rows_written, self.total))
