"""How stable the top pick is: how often each backbone scores highest when the groups (slides, patients,
images) are resampled with replacement.

Each resample draws as many groups as the task has, with replacement (a tile counts as often as its
group is drawn); every backbone sees the same resample (paired). On a resample the ranking metric is
computed on each distinct split's test tiles from the stored out-of-fold outputs and averaged over the
splits, as the ranking averages; the backbone with the highest mean wins the resample (exact ties share
it). With every weight 1 this is the ranking's own mean. No probe is refit: the resampling measures how
much the ranking rests on which groups were labelled, given the fitted probes.

Vectorised over resamples: balanced accuracy and macro-F1 are weighted counts (a (resamples, groups)
matrix of draw counts times per-group class tables); AUROC is the weighted Mann-Whitney statistic over
each split's tiles sorted once by score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SEED = 20  # the resamples are the same on every run


@dataclass
class OutOfFold:
    """The ranked probes' test outputs on each distinct split, kept compact: the predicted class (int16)
    for balanced accuracy and macro-F1, the scores (float32; binary: the positive class's) for AUROC."""

    codes: np.ndarray  # each tile's class code
    groups: np.ndarray  # each tile's group, 0..G-1
    classes: int
    metric: str
    tests: list[np.ndarray] = field(default_factory=list)  # test positions of each distinct split
    index: dict[tuple[int, int], int] = field(default_factory=dict)  # (seed, fold) -> position in tests
    outputs: dict[str, dict[str, list]] = field(default_factory=dict)  # probe -> backbone -> per split

    @classmethod
    def of(cls, codes: np.ndarray, groups: np.ndarray, classes: int, metric: str, folds: list) -> OutOfFold:
        """An empty store for `folds`; a split whose test set repeats an earlier one is not kept again."""
        _, group_codes = np.unique(groups, return_inverse=True)
        found = cls(np.asarray(codes), group_codes.astype(np.int64), classes, metric)
        seen: dict[bytes, int] = {}
        for split in folds:
            test = np.asarray(split.test, dtype=np.int64)
            at = seen.setdefault(test.tobytes(), len(found.tests))
            if at == len(found.tests):
                found.tests.append(test)
            found.index[(split.seed, split.fold)] = at
        return found

    def record(self, key: str, seed: int, fold: int, probabilities: dict[str, np.ndarray]) -> None:
        """Keep `key`'s test outputs (probe -> (n_test, C) probabilities) on split (seed, fold)."""
        at = self.index[(seed, fold)]
        for probe, found in probabilities.items():
            per_split = self.outputs.setdefault(probe, {}).setdefault(key, [None] * len(self.tests))
            if per_split[at] is None:
                per_split[at] = compact(found, self.metric)


def compact(probabilities: np.ndarray, metric: str) -> np.ndarray:
    """What `metric` needs of a split's probabilities: the predicted class, or the scores."""
    if metric != "auroc":
        return probabilities.argmax(axis=1).astype(np.int16)
    if probabilities.shape[1] == 2:
        return probabilities[:, 1].astype(np.float32)
    return probabilities.astype(np.float32)


def group_draws(groups: int, resamples: int, seed: int = SEED) -> np.ndarray:
    """(resamples, groups) how often each group is drawn: `groups` draws with replacement each."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(groups, np.full(groups, 1 / groups), size=resamples).astype(np.float64)


def top_shares(oof: OutOfFold, resamples: int, seed: int = SEED) -> dict[str, dict[str, float]]:
    """probe -> backbone -> share of `resamples` group resamples in which it has the highest mean."""
    weights = group_draws(int(oof.groups.max()) + 1, resamples, seed)
    return {probe: shares_of(scores) for probe, scores in resampled_scores(oof, weights).items()}


def shares_of(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """backbone -> share of resamples it wins, from backbone -> (resamples,) scores; ties share a win."""
    keys = list(scores)
    table = np.stack([scores[k] for k in keys], axis=1)  # (resamples, backbones)
    table = np.where(np.isnan(table), -np.inf, table)
    top = table == table.max(axis=1, keepdims=True)
    credit = top / top.sum(axis=1, keepdims=True)
    return {key: float(share) for key, share in zip(keys, credit.mean(axis=0), strict=True)}


def resampled_scores(oof: OutOfFold, weights: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """probe -> backbone -> (resamples,) the metric's mean over the distinct splits, each resample
    weighting a tile by its group's row of `weights` (resamples, groups)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    per_split = [_SplitTiles.of(oof, test, weights) for test in oof.tests]
    for probe, by_key in oof.outputs.items():
        out[probe] = {}
        for key, outputs in by_key.items():
            values = [tiles.score(found, oof.metric) for tiles, found in zip(per_split, outputs, strict=True)]
            out[probe][key] = _nanmean(np.stack(values), axis=0)
    return out


@dataclass
class _SplitTiles:
    """One split's test tiles against the resamples: labels, local group codes, the groups' weights."""

    codes: np.ndarray
    local: np.ndarray  # each test tile's group as a position in `weights`' columns
    weights: np.ndarray  # (resamples, groups of this split)
    truth: np.ndarray  # (resamples, classes) weighted count of each true class
    classes: int

    @classmethod
    def of(cls, oof: OutOfFold, test: np.ndarray, weights: np.ndarray) -> _SplitTiles:
        present, local = np.unique(oof.groups[test], return_inverse=True)
        codes = oof.codes[test]
        chosen = np.ascontiguousarray(weights[:, present])
        truth = chosen @ _table(local, codes, len(present), oof.classes)
        return cls(codes, local, chosen, truth, oof.classes)

    def score(self, found: np.ndarray, metric: str) -> np.ndarray:
        """(resamples,) the metric of this split's outputs under each resample's weights."""
        if metric == "auroc":
            return self._auroc(found)
        hit = found == self.codes
        hits = self.weights @ _table(self.local[hit], self.codes[hit], self.weights.shape[1], self.classes)
        with np.errstate(all="ignore"):
            if metric == "balanced_accuracy":
                return _nanmean(np.where(self.truth > 0, hits / self.truth, np.nan), axis=1)
            predicted = self.weights @ _table(self.local, found, self.weights.shape[1], self.classes)
            denominator = self.truth + predicted
            return np.where(denominator > 0, 2 * hits / denominator, 0.0).mean(axis=1)  # macro-F1

    def _auroc(self, found: np.ndarray) -> np.ndarray:
        if found.ndim == 1:
            return _weighted_auroc(self.codes == 1, found, self.local, self.weights)
        per_class = [
            _weighted_auroc(self.codes == c, found[:, c], self.local, self.weights)
            for c in range(self.classes)
        ]
        return _nanmean(np.stack(per_class, axis=1), axis=1)  # NaN: a resample lacks a side of a class


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """The mean over the non-NaN values along `axis`; NaN where there are none (without a warning)."""
    present = ~np.isnan(values)
    total = np.where(present, values, 0.0).sum(axis=axis)
    count = present.sum(axis=axis)
    with np.errstate(all="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _table(local: np.ndarray, codes: np.ndarray, groups: int, classes: int) -> np.ndarray:
    """(groups, classes) tile counts."""
    counts = np.bincount(local * classes + codes, minlength=groups * classes)
    return counts.reshape(groups, classes).astype(np.float64)


def _weighted_auroc(
    positive: np.ndarray, score: np.ndarray, local: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(resamples,) AUROC with each tile counted by its group's weight: the share of (positive, negative)
    pairs ordered right, tied scores counting half (the mid-rank AUROC with every weight 1).

    With few groups the ordered pairs are a quadratic form in the group weights, w' C w, where C[g, h]
    counts the pairs of a positive in g and a negative in h (one pass over the sorted tiles, then
    resamples x groups^2); with many, the pairs are summed over the sorted tiles for every resample."""
    if positive.all() or not positive.any():
        return np.full(len(weights), np.nan)
    groups = weights.shape[1]
    order = np.argsort(score, kind="mergesort")
    ordered = score[order]
    new_block = np.r_[True, ordered[1:] != ordered[:-1]]  # blocks of tied scores
    is_positive, group = positive[order], local[order]
    if groups * groups <= 4 * len(score):
        block = np.cumsum(new_block) - 1
        blocks = int(block[-1]) + 1
        neg = _counts(block[~is_positive], group[~is_positive], blocks, groups)  # (blocks, groups)
        below = np.cumsum(neg, axis=0) - 0.5 * neg  # negatives below each block, ties half
        pos = _counts(group[is_positive], block[is_positive], groups, blocks)  # (groups, blocks)
        ordered_pairs = ((weights @ (pos @ below)) * weights).sum(axis=1)
        pairs = (weights @ pos.sum(axis=1)) * (weights @ neg.sum(axis=0))
    else:
        tile_weights = weights[:, group]  # (resamples, tiles), sorted by score
        pos = tile_weights * is_positive
        neg = tile_weights - pos
        if not new_block.all():  # tied scores: sum each block
            starts = np.flatnonzero(new_block)
            pos, neg = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(neg, starts, axis=1)
        below = np.cumsum(neg, axis=1) - 0.5 * neg
        ordered_pairs = (pos * below).sum(axis=1)
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(all="ignore"):
        return np.where(pairs > 0, ordered_pairs / pairs, np.nan)


def _counts(rows: np.ndarray, columns: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) how often each (row, column) pair occurs."""
    return np.bincount(rows * width + columns, minlength=height * width).reshape(height, width).astype(float)
