"""Scores of one split, their mean and interval over splits, and the paired test between backbones.

Cross-validation splits share training tiles, so the plain variance over folds understates the
uncertainty. Intervals and tests use the corrected repeated k-fold t statistic (Nadeau & Bengio, 2003;
Bouckaert & Frank, 2004): the variance over the J distinct splits (folds x seeds, less any split whose
test set an earlier seed already had) is scaled by (1 / J + n_test / n_train), with J - 1 degrees of
freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtr, stdtrit  # Student's t CDF and its inverse (scipy.stats costs 1 s)


def split_scores(y: np.ndarray, probabilities: np.ndarray, classes: int) -> dict[str, float]:
    """balanced_accuracy, macro_f1, auroc (one-vs-rest mean over the classes present) and f1 per class
    (`f1:<code>`) of one test set; predictions are the most probable class (lowest code on ties).

    Computed directly (scikit-learn's functions give the same values; their input checks cost more than
    the arithmetic here, thousands of times per probe).
    """
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    true_counts, predicted_counts, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    present = true_counts > 0
    recall = hits[present] / true_counts[present]
    denominator = true_counts + predicted_counts
    f1 = np.divide(2 * hits, denominator, out=np.zeros(classes), where=denominator > 0)
    if classes == 2:
        auroc = binary_auroc(y == 1, probabilities[:, 1])
    else:
        aurocs = [
            binary_auroc(y == c, probabilities[:, c]) for c in range(classes) if 0 < true_counts[c] < len(y)
        ]
        auroc = float(np.mean(aurocs)) if aurocs else math.nan
    out = {"balanced_accuracy": float(recall.mean()), "macro_f1": float(f1.mean()), "auroc": float(auroc)}
    out.update({f"f1:{c}": float(v) for c, v in enumerate(f1)})
    return out


def binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic with mid-ranks for ties (what
    scikit-learn's roc_auc_score computes); NaN when one side is empty."""
    positives = int(positive.sum())
    negatives = len(positive) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = mid_ranks(score)
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (scipy.stats.rankdata's default)."""
    order = np.argsort(values, kind="mergesort")
    ordered = np.asarray(values)[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    tie_group = np.cumsum(starts) - 1  # per sorted position
    bounds = np.r_[
        np.flatnonzero(starts), len(ordered)
    ]  # group g spans sorted positions [bounds[g], bounds[g+1])
    ranks = np.empty(len(ordered), dtype=np.float64)
    ranks[order] = (bounds[tie_group] + bounds[tie_group + 1] + 1) / 2
    return ranks


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def corrected_interval(values: np.ndarray, test_fraction: float, confidence: float = 0.95) -> Interval:
    """Mean and interval over splits; `test_fraction` = n_test / n_train of one split."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return Interval(mean, math.nan, math.nan)
    half = stdtrit(len(values) - 1, 0.5 + confidence / 2) * _corrected_sd(values, test_fraction)
    return Interval(mean, mean - half, mean + half)


def paired_p_value(a: np.ndarray, b: np.ndarray, test_fraction: float) -> float:
    """Two-sided p of the corrected resampled t-test on per-split differences (1.0 when they are all
    equal: identical backbones cannot be told apart)."""
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(differences) < 2:
        return math.nan
    sd = _corrected_sd(differences, test_fraction)
    mean = float(differences.mean())
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    t = mean / sd
    return float(2 * stdtr(len(differences) - 1, -abs(t)))


def _corrected_sd(values: np.ndarray, test_fraction: float) -> float:
    return math.sqrt((1 / len(values) + test_fraction) * float(np.var(values, ddof=1)))
