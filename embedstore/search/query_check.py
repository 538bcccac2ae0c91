"""The query check: do the positives agree with each other, judged against the data they are searched in?

The rule (leave-one-out rank). For each positive, the other positives make a query (their mean, as a search
fuses them); the positive's `share` is the fraction of the pool's tiles (the tiles the filters leave, the
positives themselves left out; a random sample of up to SAMPLE of them) that this query finds more similar
than the positive. A share of 0 means the others' query ranks it above every tile of the data; 0.5 means
no higher than a typical tile.

- A positive is an **outlier** when its share is above OUTLIER_SHARE (0.5): the other positives rank it
  below half of the data. Judged from 3 positives on (with 2, each is the other's only reference, so a bad
  pair shows as an incoherent set instead).
- The set is **incoherent** when the median share is above INCOHERENT_SHARE (0.25): typically, a positive
  is not even among the top quarter of the data by the others' query, so a search fusing them looks for
  something between them rather than for what they share.

One positive is not checked. `--drop-outliers` searches without the outliers (never all of them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..evaluate.space import VectorSpace

SAMPLE = 10_000  # pool tiles the positives are ranked among (a fixed-seed sample of larger pools)
OUTLIER_SHARE = 0.5
INCOHERENT_SHARE = 0.25
MIN_FOR_OUTLIERS = 3


@dataclass
class PositiveCheck:
    """One positive: its name, the share of the pool the others' query ranks above it, and the verdict."""

    name: str  # a tile id, an image file name, or "vector N"
    share: float
    outlier: bool


@dataclass
class QueryCheck:
    """The positives' check (see the module docstring for the rule); `warning` is None when all is well."""

    positives: list[PositiveCheck] = field(default_factory=list)
    pool: int = 0  # pool tiles the positives were ranked among
    incoherent: bool = False
    dropped: list[str] = field(default_factory=list)  # outliers left out of the search (--drop-outliers)

    @property
    def checked(self) -> bool:
        return len(self.positives) >= 2

    @property
    def median_share(self) -> float | None:
        return float(np.median([p.share for p in self.positives])) if self.checked else None

    @property
    def outliers(self) -> list[PositiveCheck]:
        return [p for p in self.positives if p.outlier]

    def warning(self) -> str | None:
        """One line naming the outliers and/or the incoherent set, with what to do; None when all is well."""
        parts = []
        if self.outliers:
            named = ", ".join(f"{p.name} (below {p.share:.0%})" for p in self.outliers)
            parts.append(
                f"outlier positive(s) {named}: the other positives' query ranks them below more than "
                f"{OUTLIER_SHARE:.0%} of the {self.pool:,} pool tiles checked"
            )
        if self.incoherent:
            parts.append(
                f"the {len(self.positives)} positives are incoherent: a typical one ranks below "
                f"{self.median_share:.0%} of the pool by the others' query (coherent: at most "
                f"{INCOHERENT_SHARE:.0%}; random tiles: about 50%)"
            )
        if not parts:
            return None
        if self.dropped:
            action = f"searched without {', '.join(self.dropped)} (--drop-outliers)"
        elif self.outliers and len(self.outliers) < len(self.positives):
            action = "check them, or pass --drop-outliers"
        else:
            action = "check the positives, or add more of the kind you mean"
        return "; ".join(parts) + f"; {action}"

    def summary(self) -> str:
        """One line: the warning, or that the positives agree (or were too few to check)."""
        if not self.checked:
            return "query check: needs 2 positives or more"
        return self.warning() or (
            f"query check: the {len(self.positives)} positives agree (median share {self.median_share:.0%}, "
            f"none above {OUTLIER_SHARE:.0%})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "positives": [asdict(p) for p in self.positives],
            "pool": self.pool,
            "median_share": self.median_share,
            "incoherent": self.incoherent,
            "outliers": [p.name for p in self.outliers],
            "dropped": self.dropped,
            "warning": self.warning(),
            "rule": {
                "outlier_share": OUTLIER_SHARE,
                "incoherent_share": INCOHERENT_SHARE,
                "min_for_outliers": MIN_FOR_OUTLIERS,
            },
        }


def check_positives(
    space: VectorSpace,
    positives: np.ndarray,
    names: list[str],
    pool: np.ndarray,
    keep: np.ndarray | None = None,
) -> QueryCheck:
    """The check of `positives` (prepared vectors, named by `names`) against `pool` (prepared vectors of
    the pool's tiles; `keep`: a mask of the rows to count, e.g. all but the positives themselves)."""
    keep = np.ones(len(pool), dtype=bool) if keep is None else keep
    counted = int(keep.sum())
    if len(positives) < 2 or counted == 0:
        return QueryCheck(pool=counted)
    shares = []
    for i in range(len(positives)):
        others = space.combine(np.delete(positives, i, axis=0))
        own = float(space.similarity(others, positives[i : i + 1])[0, 0])
        nearer = space.similarity(others, pool)[0] > own
        shares.append(float(nearer[keep].mean()))
    judge = len(positives) >= MIN_FOR_OUTLIERS
    checks = [
        PositiveCheck(name, share, judge and share > OUTLIER_SHARE)
        for name, share in zip(names, shares, strict=True)
    ]
    return QueryCheck(checks, counted, float(np.median(shares)) > INCOHERENT_SHARE)


def sample_positions(allowed: np.ndarray, size: int = SAMPLE, seed: int = 0) -> np.ndarray:
    """Up to `size` positions where `allowed` is true: all of them, or a fixed-seed random sample."""
    positions = np.flatnonzero(allowed)
    if len(positions) <= size:
        return positions
    return np.sort(np.random.default_rng(seed).choice(positions, size, replace=False))
