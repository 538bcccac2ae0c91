"""Recall of an approximate index against exact search, and tuning its search breadth to a target."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..core.moved import forward
from ..evaluate import neighbours as _neighbours

K = 10
# exact_neighbours, sample_queries and RECALL_QUERIES moved to embedstore.evaluate.neighbours
# (this path warns, for one release)
__getattr__ = forward(
    "embedstore.search.tuning",
    "embedstore.evaluate.neighbours",
    {"exact_neighbours", "sample_queries", "RECALL_QUERIES"},
)


class Tunable(Protocol):
    def search(self, queries: np.ndarray, k: int) -> np.ndarray: ...
    def widen(self) -> bool: ...


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
    rows = _neighbours.sample_queries(len(vectors))
    queries = vectors[rows]
    truth = _neighbours.exact_neighbours(vectors, queries, metric, K + 1)
    return tune_against(index, queries, truth, rows, target), len(rows)


def tune_against(
    index: Tunable, queries: np.ndarray, truth: np.ndarray, rows: np.ndarray, target: float
) -> float:
    """Widen the index's search until recall@10 of `queries` (stored rows `rows`, exact neighbours
    `truth`, K + 1 of them) reaches `target` or nothing is left to widen; the recall kept."""
    while True:
        recall = recall_at_k(index.search(queries, K + 1), truth, rows)
        if recall >= target or not index.widen():
            return recall
