"""Which mean a search centres on, and the index's stored vectors re-centred on it.

An index stores unit vectors u_i centred on its own mean m (zero when built uncentred) and each row's
length n_i before normalising, so raw_i = m + n_i u_i. Centred on another mean c, a row is
unit(raw_i - c) = unit(n_i u_i - (c - m)): computed exactly from what the index holds, without reading
the table again. `pool` centres on the mean of the rows a search may return (after --where and
--exclude-task), which suits a store mixing datasets; `index` keeps the index's own centring; `none` is
raw cosine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..evaluate.space import VectorSpace

CHUNK = 65_536


@dataclass(frozen=True)
class Centring:
    """The centring one search applied. `name`: pool | table | none | l2; `text`: it in words; `space`
    prepares raw query vectors (images, --vectors) like the candidates; `offset` (c - m) re-centres the
    stored vectors, None when they are used as stored."""

    name: str
    text: str
    space: VectorSpace
    offset: np.ndarray | None = None

    @property
    def recentred(self) -> bool:
        return self.offset is not None

    def stored(self, unit: np.ndarray, norms: np.ndarray | None) -> np.ndarray:
        """Stored unit vectors as this search compares them (re-centred and unit again when needed)."""
        if self.offset is None:
            return unit
        assert norms is not None
        finite = np.isfinite(norms)  # a row too long for float32: its direction is its own
        x = unit * np.where(finite, norms, 1.0)[:, None] - self.offset * finite[:, None]
        lengths = np.sqrt(np.einsum("ij,ij->i", x, x))
        x /= np.maximum(lengths, 1e-12)[:, None]
        return x.astype(np.float32, copy=False)


def pool_mean(
    vectors: Callable[[np.ndarray], np.ndarray],
    norms: np.ndarray,
    index_mean: np.ndarray | None,
    positions: np.ndarray,
) -> np.ndarray:
    """The raw mean of the rows at `positions` (float64 sums), from their stored unit vectors and lengths;
    `positions` is not empty."""
    total: np.ndarray | float = 0.0
    counted = 0
    for start in range(0, len(positions), CHUNK):
        chunk = positions[start : start + CHUNK]
        lengths = norms[chunk]
        finite = np.isfinite(lengths)
        unit = vectors(chunk[finite])
        total = total + np.einsum("ij,i->j", unit.astype(np.float64), lengths[finite].astype(np.float64))
        counted += int(finite.sum())
    mean = np.asarray(total, dtype=np.float64) / max(counted, 1)
    if index_mean is not None:
        mean = mean + index_mean.astype(np.float64)
    return mean.astype(np.float32)
