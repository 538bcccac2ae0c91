"""Writing vectors into an `emb__<key>` table: the contract every executor (local, distributed) shares.

`EmbeddingWriter.write` commits one batch of (tile, view, vector) rows atomically, each (tile, view) at
most once whatever other processes write at the same time (`embedstore.storage.keyed_writes`). The first write
creates the table; when another process created it first, its provenance must match this run's.
`ChunkedWriter` is the local executor's front: it buffers rows into chunks and keeps one commit in
flight on a background thread while the model runs. Chunks are sized by rate (`next_chunk_rows`): at
least `chunk_rows`, and large enough that a chunk takes at least COMMIT_INTERVAL seconds and at least
twice its commit to fill, so that the writer never holds the model back and a fast GPU does not leave
a version behind every fraction of a second; at most MAX_CHUNK_BYTES of vectors are buffered.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.schema import ROW_KEY_SEPARATOR
from ..storage.catalog import Catalog
from ..storage.embedding_tables import Provenance, check_compatible, embedding_schema, recorded_provenance
from .options import EmbedProgress
from .timeline import Timeline

COMMIT_INTERVAL = 2.0  # seconds of rows per commit, at least
COMMIT_SHARE = 0.5  # a commit may take at most this share of the time its chunk takes to fill
MAX_CHUNK_BYTES = 256 * 2**20  # vectors buffered per chunk, at most


def next_chunk_rows(rate: float, commit_seconds: float, floor: int, ceiling: int) -> int:
    """Rows of the next chunk at `rate` rows/s when the last commit took `commit_seconds`.

    At least `floor` (and `ceiling` bounds it), enough for COMMIT_INTERVAL seconds of rows, and enough
    that the commit (taken to cost as much as the last one) fits in COMMIT_SHARE of the filling time.
    """
    if rate <= 0:
        return floor
    seconds = max(COMMIT_INTERVAL, commit_seconds / COMMIT_SHARE)
    return max(floor, min(ceiling, math.ceil(rate * seconds)))


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
    """Buffers rows into rate-sized chunks (`next_chunk_rows`) and commits each on a thread, one commit in
    flight (`sized_by_rate=False`: chunks of `chunk_rows`, for runs that count their commits).
    `stalled_seconds` is how long `add` waited for a commit: the writer holding the model back."""

    def __init__(
        self,
        writer: EmbeddingWriter,
        total: int,
        on_chunk: Callable[[EmbedProgress], None] | None,
        chunk_rows: int = 4096,
        timeline: Timeline | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sized_by_rate: bool = True,
    ) -> None:
        self.writer, self.total, self.on_chunk, self.chunk_rows = writer, total, on_chunk, chunk_rows
        self.timeline, self.clock, self.sized_by_rate = timeline, clock, sized_by_rate
        self.rows_written = 0  # inserted by this run
        self.rows_elsewhere = 0  # computed here, but another process had written them meanwhile
        self.commits: list[tuple[int, float]] = []  # (rows, seconds) of each finished commit
        self.stalled_seconds = 0.0
        self.target_rows = chunk_rows  # the current chunk's size
        self.max_rows = max(chunk_rows, MAX_CHUNK_BYTES // max(1, writer.dim * 4))
        self._tiles: set[str] = set()
        self._ids: list[str] = []
        self._views: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []
        self._buffered = 0
        self._chunk_started: float | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed-writer")
        self._pending: tuple[Future, int, list[str]] | None = None

    @property
    def name(self) -> str:
        return self.writer.name

    @property
    def tiles_written(self) -> int:
        return len(self._tiles)

    def add(self, tile_ids: list[str], views: np.ndarray, vectors: np.ndarray) -> None:
        if self._chunk_started is None:
            self._chunk_started = self.clock()
        self._ids += tile_ids
        self._views.append(views)
        self._vectors.append(vectors)
        self._buffered += len(tile_ids)
        if self._buffered >= self.target_rows:
            rows, filled = self._buffered, self.clock() - self._chunk_started
            self.flush()
            self._resize(rows / filled if filled > 0 else 0.0)

    def flush(self) -> None:
        """Hand the buffered rows to the commit thread (after the previous commit has finished)."""
        waited = self.clock()
        self._wait()
        self.stalled_seconds += self.clock() - waited
        if not self._buffered:
            return
        ids, views, vectors = self._ids, np.concatenate(self._views), np.concatenate(self._vectors)
        self._pending = (self._pool.submit(self._commit, ids, views, vectors), len(ids), ids)
        self._ids, self._views, self._vectors, self._buffered = [], [], [], 0
        self._chunk_started = None

    def close(self) -> None:
        """Wait for the commit in flight (never leave half a run's bookkeeping behind), then stop."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def _resize(self, rate: float) -> None:
        """Size the next chunk from the rate the last one filled at and the last commit's cost."""
        if not self.sized_by_rate:
            return
        last_commit = self.commits[-1][1] if self.commits else 0.0
        self.target_rows = next_chunk_rows(rate, last_commit, self.chunk_rows, self.max_rows)

    def _commit(self, ids: list[str], views: np.ndarray, vectors: np.ndarray) -> tuple[int, float]:
        started = time.perf_counter()
        inserted = self.writer.write(ids, views, vectors)
        ended = time.perf_counter()
        if self.timeline is not None:
            self.timeline.add("write", started, ended, len(ids))
        return inserted, ended - started

    def _wait(self) -> None:
        if self._pending is None:
            return
        future, rows, ids = self._pending
        self._pending = None
        inserted, seconds = future.result()
        self.commits.append((rows, seconds))
        self.rows_written += inserted
        self.rows_elsewhere += rows - inserted
        self._tiles.update(ids)
        if self.on_chunk is not None:
            self.on_chunk(EmbedProgress(self.name, self.rows_written, self.total))
