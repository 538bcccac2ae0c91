"""The vector space an index lives in: cosine on (optionally centred) unit vectors, or plain L2.

Histology embeddings share a large common component (every tile is "tissue"), so raw cosine similarity
is dominated by it; subtracting the table's mean before normalising compares what differs between tiles.
`benchmarks/search.py` measures both on real data; centring is the default because it retrieves better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VectorSpace:
    """`metric` cosine or l2; `mean` the centring vector (cosine with centring), else None."""

    metric: str
    mean: np.ndarray | None = None

    @classmethod
    def fit(cls, metric: str, center: bool, vectors: np.ndarray) -> VectorSpace:
        """The space for these vectors; the mean is accumulated in float64."""
        mean = (
            vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
            if center and metric == "cosine"
            else None
        )
        return cls(metric, mean)

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Stored vectors as the index holds them: float32, C-contiguous; centred and unit for cosine."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.metric != "cosine":
            return x
        x = x - self.mean if self.mean is not None else x.copy()
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # a third of np.linalg.norm's time: no squared copy
        x /= np.maximum(norms, 1e-12)[:, None]
        return x

    def similarity(self, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """(q, n) scores between prepared vectors, higher = more alike: cosine, or -squared L2."""
        if self.metric == "cosine":
            return queries @ vectors.T
        products = queries @ vectors.T
        return 2 * products - (queries**2).sum(1)[:, None] - (vectors**2).sum(1)[None, :]

    def combine(self, queries: np.ndarray) -> np.ndarray:
        """One query from several prepared ones: their mean (back on the unit sphere for cosine)."""
        mean = queries.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        if self.metric == "cosine":
            mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return mean
