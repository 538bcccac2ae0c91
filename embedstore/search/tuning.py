"""Recall of an approximate index against exact search, and tuning its search breadth to a target."""

from __future__ import annotations

from typing import Protocol

import faiss
import numpy as np

RECALL_QUERIES = 500  # vectors of the table used as queries when measuring recall
K = 10


class Tunable(Protocol):
    def search(self, queries: np.ndarray, k: int) -> np.ndarray: ...
    def widen(self) -> bool: ...


def sample_queries(rows: int, count: int = RECALL_QUERIES, seed: int = 0) -> np.ndarray:
    """Row numbers of the vectors used as queries (sorted, at most `rows`)."""
    return np.sort(np.random.default_rng(seed).choice(rows, min(count, rows), replace=False))


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, metric: str, k: int) -> np.ndarray:
    """(q, k) positions of the exact nearest neighbours (brute force with FAISS's BLAS kernels)."""
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    _, positions = faiss.knn(queries, vectors, k, metric=faiss_metric)
    return positions


def recall_at_k(found: np.ndarray, truth: np.ndarray, own: np.ndarray | None = None, k: int = K) -> float:
    """Mean share of the true k nearest found among the first k returned; `own` (the queries' own
    positions, when queries are stored vectors) is left out of both lists, so a query finding itself
    does not count."""
    hits = 0
    for i in range(len(found)):
        f, t = found[i], truth[i]
        if own is not None:
            f, t = f[f != own[i]], t[t != own[i]]
        hits += len(np.intersect1d(f[:k], t[:k]))
    return hits / (k * len(found)) if len(found) else 1.0


def tune(index: Tunable, vectors: np.ndarray, metric: str, target: float) -> tuple[float, int]:
    """Widen the index's search until recall@10 on a sample reaches `target` (or nothing is left to
    widen); returns (recall measured with the settings kept, queries used)."""
    rows = sample_queries(len(vectors))
    queries = vectors[rows]
    truth = exact_neighbours(vectors, queries, metric, K + 1)
    while True:
        recall = recall_at_k(index.search(queries, K + 1), truth, rows)
        if recall >= target or not index.widen():
            return recall, len(rows)
