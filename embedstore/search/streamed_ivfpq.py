"""Build a codes-only IVF-PQ index from vectors streamed out of the embedding table, never all in memory.

    first pass   tile ids, row addresses (and the centring mean) over streamed batches
    training     k-means and PQ codebooks on a sample: only the sampled rows are read (by address)
    second pass  each batch prepared, encoded and added; the exact top-10 of the recall queries kept
    tuning       nprobe and refine_factor doubled until recall@10 (exact re-scoring) reaches the target

Peak memory is about the codes (m bytes + an 8-byte id a row) + one batch + the training sample + the ids
and addresses. Candidates are re-scored with exact vectors read from the table by address
(`TableVectors`), so the index never holds an exact vector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..core.errors import EmbedstoreError
from ..core.ids import IdLookup
from ..embeddings import EmbeddingQuery
from ..evaluate import neighbours
from ..evaluate.space import VectorSpace
from .configs import IvfPqConfig
from .faiss_index import FaissIndex, empty_codes, training_rows
from .recall import K, tune_against
from .table_vectors import TableVectors

BATCH_ROWS = 65_536  # vectors read (and encoded) at a time: 64 MB of float32 at 256-d


@dataclass
class StreamedBuild:
    """A built index and what its manifest and ids file record."""

    backend: FaissIndex
    space: VectorSpace
    tile_ids: pa.Array  # position -> tile id
    norms: np.ndarray  # (rows,) each row's length before normalising
    addresses: np.ndarray  # (rows,) uint64 row address in the table
    recall: float
    queries: int
    batches: int  # batches read in each pass
    largest_batch: int  # rows in the largest batch read


def build(
    query: EmbeddingQuery,
    config: IvfPqConfig,
    metric: str,
    center: bool,
    centre_ids: pa.Array | None = None,
    device: str = "auto",
    say: Callable[[str], None] = lambda _: None,
    batch_rows: int | None = None,
) -> StreamedBuild:
    """Stream `query`'s vectors into a codes-only IVF-PQ index (`config` resolved for the row count);
    centred on the mean of all rows, or of the tiles `centre_ids`, with `center` (cosine)."""
    batch_rows = batch_rows or BATCH_ROWS
    table = query.embedding_table()
    ids, addresses, mean, batches, largest = _first_pass(query, metric, center, centre_ids, batch_rows)
    space = VectorSpace(metric, mean)
    rows = len(ids)
    dim = table.dim
    index = empty_codes(config, dim, metric)
    sample = training_rows(rows, config)
    say(f"training {config.nlist} lists and {config.m}x{config.nbits}-bit codes on {len(sample)} rows")
    index.train(space.prepare(table.take(addresses[sample])))
    query_rows = neighbours.sample_queries(rows)
    queries = space.prepare(table.take(addresses[query_rows]))
    truth = neighbours.BlockedTopK(queries, K + 1, metric)
    norms = np.empty(rows, dtype=np.float32)
    say(f"encoding {rows} vectors in batches of {batch_rows}")
    done = 0
    for raw, batch in query.to_numpy_batches(batch_rows):
        if not _same_rows(batch.column("tile_id"), ids, done):
            raise EmbedstoreError(
                f"{query.table} v{table.version} gave its rows in another order on the second read; "
                "build again"
            )
        prepared = space.prepare(raw)
        index.add(prepared)
        truth.offer(prepared, done)
        norms[done : done + len(raw)] = space.lengths(raw)
        done += len(raw)
    if done != rows:
        raise EmbedstoreError(f"{query.table} v{table.version} gave {done} rows, then {rows}; build again")
    backend = FaissIndex(index, config, device)
    backend.read_exact_from(TableVectors(query.catalog, query.table, table.version, addresses, space))
    say(f"tuning the search breadth to recall@10 >= {config.target_recall}")
    recall = tune_against(backend, queries, truth.positions(), query_rows, config.target_recall)
    return StreamedBuild(backend, space, ids, norms, addresses, recall, len(query_rows), batches, largest)


def _first_pass(
    query: EmbeddingQuery, metric: str, center: bool, centre_ids: pa.Array | None, batch_rows: int
) -> tuple[pa.Array, np.ndarray, np.ndarray | None, int, int]:
    """(tile ids, row addresses, centring mean or None, batches, largest batch) over streamed batches."""
    centring = center and metric == "cosine"
    chosen = IdLookup(centre_ids) if centring and centre_ids is not None else None
    ids: list[pa.Array] = []
    addresses: list[np.ndarray] = []
    total: np.ndarray | float = 0.0
    counted = batches = largest = 0
    for raw, batch in query.to_numpy_batches(batch_rows, row_address=True):
        ids.append(batch.column("tile_id"))
        addresses.append(batch.column("row_address").to_numpy())
        batches, largest = batches + 1, max(largest, len(raw))
        if centring:
            rows = raw if chosen is None else raw[chosen.contains(batch.column("tile_id"))]
            total = total + rows.sum(axis=0, dtype=np.float64)
            counted += len(rows)
    if centring and counted == 0:
        raise EmbedstoreError(
            "--center-on selects no tile with a vector; check the expression (e.g. \"dataset = 'pcam'\")"
        )
    mean = (np.asarray(total) / counted).astype(np.float32) if centring else None
    tile_ids = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
    found = np.concatenate(addresses) if addresses else np.empty(0, np.uint64)
    return tile_ids, found.astype(np.uint64), mean, batches, largest


def _same_rows(batch_ids: pa.Array, ids: pa.Array, start: int) -> bool:
    """Whether the second pass's batch holds the first pass's ids from `start` on."""
    return bool(ids.slice(start, len(batch_ids)).equals(batch_ids))
