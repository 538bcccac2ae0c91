"""The vector space an index lives in: cosine on (optionally centred) unit vectors, or plain L2.

Histology embeddings share a large common component (every tile is "tissue"), so raw cosine similarity
is dominated by it; subtracting a mean before normalising compares what differs between tiles. An index
stores its vectors centred on the table's mean (or uncentred) and keeps each row's length before
normalising, so a search can re-centre them on another mean (the searched pool's: see `centring.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VectorSpace:
    """`metric` cosine or l2; `mean` the centring vector (cosine with centring), else None; `centred_on`
    names the mean in messages."""

    metric: str
    mean: np.ndarray | None = None
    centred_on: str = "the table's mean"

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
        with np.errstate(over="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # a third of np.linalg.norm's time: no squared copy
        huge = np.flatnonzero(np.isinf(norms))  # squares beyond float32 (|v| > ~1e19), or infinite values
        huge = huge[np.isfinite(x[huge]).all(axis=1)]
        if len(huge):  # finite but huge: shrink those rows first, cosine ignores length
            x[huge] /= np.abs(x[huge]).max(axis=1, keepdims=True)
            norms[huge] = np.sqrt(np.einsum("ij,ij->i", x[huge], x[huge]))
        x /= np.maximum(norms, 1e-12)[:, None]
        return x

    def lengths(self, vectors: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        """(n,) float32 length of each row after this space's centring (accumulated in float64): with the
        prepared unit rows, raw = mean + length * unit (cosine); inf for rows beyond float32's range."""
        out = np.empty(len(vectors), dtype=np.float32)
        for start in range(0, len(vectors), chunk):
            x = np.asarray(vectors[start : start + chunk], dtype=np.float64)
            if self.mean is not None:
                x = x - self.mean
            with np.errstate(over="ignore"):
                out[start : start + len(x)] = np.sqrt(np.einsum("ij,ij->i", x, x))
        return out

    def query_problem(self, prepared: np.ndarray) -> tuple[int, str] | None:
        """The first prepared row that cannot be a query here, and why (None when all can): a row with no
        direction (zero, or the centring mean itself) scores 0 against everything; for l2, a row whose
        squared length overflows float32 scores -inf against everything."""
        wide = prepared.astype(np.float64)  # the squared lengths of float32 rows, without overflow
        lengths = np.einsum("ij,ij->i", wide, wide)
        if self.metric == "cosine":
            bad = np.flatnonzero(~(lengths > 0.5))
            why = f"is zero after centring on {self.centred_on}" if self.mean is not None else "is all zeros"
            return (int(bad[0]), f"{why}: it has no direction to compare") if len(bad) else None
        bad = np.flatnonzero(~(lengths < np.finfo(np.float32).max))
        return (int(bad[0]), "is too long for l2 scores in float32; scale it down") if len(bad) else None

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
