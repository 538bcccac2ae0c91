"""Exact nearest neighbours: a brute-force search, the same over vectors offered block by block
(`BlockedTopK`, for tables streamed in batches), a sample of query rows, and every fold's nearest
training neighbours at once when the folds' test sets partition the rows.

In k-fold cross-validation the training set of fold f is every row outside fold f, so the similarities
between folds f and g serve twice: f's rows searching g's, and g's rows searching f's. Computing each
pair of folds once halves the products of searching fold by fold; FAISS's own heaps keep the k best.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHUNK_ROWS, CHUNK_COLUMNS = 2048, 8192  # a similarity block of at most 64 MB
RECALL_QUERIES = 500  # vectors of the table used as queries when measuring recall


def sample_queries(rows: int, count: int = RECALL_QUERIES, seed: int = 0) -> np.ndarray:
    """Row numbers of the vectors used as queries (sorted, at most `rows`)."""
    return np.sort(np.random.default_rng(seed).choice(rows, min(count, rows), replace=False))


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, metric: str, k: int) -> np.ndarray:
    """(q, k) positions of the exact nearest neighbours (brute force with FAISS's BLAS kernels)."""
    import faiss

    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    _, positions = faiss.knn(queries, vectors, k, metric=faiss_metric)
    return positions


class BlockedTopK:
    """The exact k nearest of each query among vectors offered block by block (positions counted across
    blocks): FAISS's BLAS kernels and heaps find each block's k best, then k + k are merged. Memory is
    the queries, (q, k) results and FAISS's own similarity tiles, whatever the block size."""

    def __init__(self, queries: np.ndarray, k: int, metric: str) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k, self.l2 = k, metric == "l2"
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)

    def offer(self, vectors: np.ndarray, first: int) -> None:
        """Offer prepared `vectors`, positions `first`, `first + 1`, ..."""
        import faiss

        found = min(self.k, len(vectors))
        if found == 0 or len(self.queries) == 0:
            return
        metric = faiss.METRIC_L2 if self.l2 else faiss.METRIC_INNER_PRODUCT
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        scores, ids = faiss.knn(self.queries, vectors, found, metric=metric)
        both_scores = np.concatenate([self.scores, -scores if self.l2 else scores], axis=1)
        both_ids = np.concatenate([self.ids, ids + first], axis=1)
        order = np.lexsort((both_ids, -both_scores), axis=-1)[:, : self.k]  # ties: lower position first
        self.scores = np.take_along_axis(both_scores, order, axis=1)
        self.ids = np.take_along_axis(both_ids, order, axis=1)

    def positions(self) -> np.ndarray:
        """(q, k) positions, best first (ties: lower position first); -1 pads when fewer were offered."""
        return self.ids


def cross_fold_neighbours(unit: np.ndarray, test_sets: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    """For each test set: (its rows, k) row positions of the k vectors most similar (inner product of
    the `unit` vectors) among the rows outside it, best first. `test_sets` must partition the rows."""
    if not is_partition(test_sets, len(unit)):
        raise ValueError("the test sets do not partition the rows")
    order = np.concatenate([np.asarray(t, dtype=np.int64) for t in test_sets])
    starts = np.r_[0, np.cumsum([len(t) for t in test_sets])]
    ordered = np.ascontiguousarray(unit[order], dtype=np.float32)  # fold by fold
    values = np.empty((len(order), k), dtype=np.float32)
    positions = np.empty((len(order), k), dtype=np.int64)
    heaps = [_heap(values[a:b], positions[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    for f in range(len(test_sets)):
        for g in range(f + 1, len(test_sets)):
            for rows in _chunks(starts[f], starts[f + 1], CHUNK_ROWS):
                for columns in _chunks(starts[g], starts[g + 1], CHUNK_COLUMNS):
                    block = ordered[rows] @ ordered[columns].T
                    _add(heaps[f], block, rows.start - starts[f], columns.start)
                    _add(heaps[g], np.ascontiguousarray(block.T), columns.start - starts[g], rows.start)
    for heap in heaps:
        heap.reorder()
    found = order[positions]  # back from fold order to row positions
    return [found[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]


def is_partition(test_sets: Sequence[np.ndarray], rows: int) -> bool:
    """Whether every one of `rows` rows is in exactly one of `test_sets`."""
    covered: np.ndarray | list[int] = (
        np.concatenate([np.asarray(t, dtype=np.int64) for t in test_sets]) if test_sets else []
    )
    return len(covered) == rows and len(np.unique(covered)) == rows


def _heap(values: np.ndarray, positions: np.ndarray):  # noqa: ANN202 (a FAISS SWIG object)
    """A FAISS min-heap array over `values`/`positions` (one heap per row, keeping the k largest)."""
    import faiss

    heap = faiss.float_minheap_array_t()
    heap.nh, heap.k = values.shape
    heap.val, heap.ids = faiss.swig_ptr(values), faiss.swig_ptr(positions)
    heap.heapify()
    heap.keepalive = (values, positions)  # type: ignore[attr-defined]  # SWIG objects take new attributes
    return heap


def _add(heap, block: np.ndarray, first_row: int, first_id: int) -> None:  # noqa: ANN001
    """Offer `block` (rows of the heap from `first_row`; ids from `first_id` along its columns)."""
    import faiss

    heap.addn(block.shape[1], faiss.swig_ptr(block), int(first_id), int(first_row), block.shape[0])


def _chunks(start: int, stop: int, size: int) -> list[slice]:
    return [slice(int(a), int(min(a + size, stop))) for a in range(int(start), int(stop), size)]
