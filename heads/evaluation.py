"""Scoring a saved head on a labelled task: held-out AUROC, average precision, balanced accuracy, F1 at
the head's threshold and the confusion matrix, each score with a bootstrap interval over groups.

    report = evaluate(store, "tumour-uni-linear", "tumour-external")
    print(report.summary()); report.metrics["auroc"].low; report.write_json("eval.json")

The task's labelled tiles (those the head's backbone embedded) are scored through the head, on the fly:
only the labelled tiles' vectors are read, so this works on a read-only store and never on stale
predictions. Tiles the head trained or validated on (its split record, saved beside its card) are left
out unless `include_training`. The task's labels must be classes of the head. Groups are embedstore's
(`embedstore.evaluate.task_tiles`: patient > slide > image > tile unless `group_by`): each bootstrap
resample draws groups with replacement, so tiles of one slide or patient stay together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from embedstore.core.errors import EmbedstoreError
from embedstore.core.ids import IdLookup, id_strings
from embedstore.core.reports import JsonReport
from embedstore.core.validation import Interval, Name
from embedstore.embeddings import EmbeddingQuery
from embedstore.evaluate import split_scores, task_tiles

from .card import TRAIN, VALIDATION, HeadCard, StoreArg, load_head, open_store
from .errors import HeadsError
from .prediction import SplitSides
from .tile_batches import checked

BOOTSTRAP = 1000  # resamples of the groups
CONFIDENCE = 0.95
FEW_GROUPS = 5  # fewer groups than this: the bootstrap interval is noted as saying little
NAMES = {
    "auroc": "AUROC",
    "average_precision": "average precision",
    "balanced_accuracy": "balanced accuracy",
    "f1": "F1",
    "macro_f1": "macro-F1",
}


@dataclass(frozen=True)
class Score:
    """A score on the evaluated tiles and its bootstrap interval (NaN when it cannot be computed)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {
            k: (None if math.isnan(v) else v)
            for k, v in (("value", self.value), ("low", self.low), ("high", self.high))
        }


@dataclass
class EvaluationReport(JsonReport):
    """A head's scores on a task's labelled tiles (see the module doc)."""

    head: str
    task: str
    classes: list[str]  # the head's classes: the confusion matrix's rows and columns, in this order
    positive_class: str | None  # binary heads
    threshold: float | None  # binary heads: p(positive) >= threshold -> positive
    tiles: int  # scored
    groups: int  # groups among them (the bootstrap's unit)
    group_by: str
    excluded: dict[str, int]  # the task's tiles the head trained (train) or validated (validation) on
    split_known: bool  # False: the head was saved without its split record
    include_training: bool  # True: those tiles were scored too, else left out
    metrics: dict[str, Score]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    bootstrap: int
    notes: list[str] = field(default_factory=list)
    y: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)  # codes in `classes`
    probabilities: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32), repr=False)
    tile_ids: np.ndarray = field(default_factory=lambda: np.empty(0, str), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "task": self.task,
            "classes": self.classes,
            "positive_class": self.positive_class,
            "threshold": self.threshold,
            "tiles": self.tiles,
            "groups": self.groups,
            "group_by": self.group_by,
            "excluded": self.excluded,
            "split_known": self.split_known,
            "include_training": self.include_training,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "confusion": self.confusion,
            "bootstrap": self.bootstrap,
            "confidence": CONFIDENCE,
            "notes": self.notes,
        }

    def summary(self) -> str:
        lines = [
            f"head {self.head!r} on task {self.task!r}: {self.tiles} tiles in {self.groups} "
            f"{self.group_by} groups"
        ]
        if not self.split_known:
            lines.append(
                "  training tiles unknown (head saved before heads kept its split): scores may include them"
            )
        elif sum(self.excluded.values()):
            train, validation = self.excluded[TRAIN], self.excluded[VALIDATION]
            counts = f"{train} training and {validation} validation tiles of the head"
            if self.include_training:
                lines.append(f"  includes {counts}: scores are optimistic")
            else:
                lines.append(f"  left out: {counts} (--include-training scores them)")
        if self.threshold is not None:
            lines.append(
                f"  threshold {self.threshold:.3f} on p({self.positive_class}) (the head's tuned one)"
            )
        interval = f"{CONFIDENCE:.0%} interval ({self.bootstrap} resamples of {self.group_by}s)"
        lines.append(f"  {'score':<20}{'value':>8}   {interval}")
        for key, score in self.metrics.items():
            name = f"F1 ({self.positive_class})" if key == "f1" else NAMES.get(key, key)
            lines.append(f"  {name:<20}{_show(score.value):>8}   {_show(score.low)} – {_show(score.high)}")
        width = max(8, *(len(c) + 2 for c in self.classes))
        lines.append("  confusion matrix (rows: true class, columns: predicted)")
        lines.append("  " + " " * width + "".join(f"{c:>{width}}" for c in self.classes))
        for name, row in zip(self.classes, self.confusion, strict=True):
            lines.append("  " + f"{name:<{width}}" + "".join(f"{n:>{width}}" for n in row))
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def evaluate(
    store: StoreArg,
    name: str,
    task: str,
    *,
    include_training: bool = False,
    group_by: str | None = None,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    progress: bool = False,
) -> EvaluationReport:
    """Score head `name` on the labelled tiles of `task`; see the module doc. HeadsError (one line) for an
    unknown head or task, labels that are not the head's classes, or no tile left to score."""
    checked("--task", task, Name())
    checked("--bootstrap", bootstrap, Interval(1, integer=True))
    checked("--seed", seed, Interval(0, integer=True))
    catalog = open_store(store)
    card, estimator = load_head(catalog, name)
    try:
        tiles = task_tiles(catalog, task, [card.backbone], group_by)
    except EmbedstoreError as error:  # unknown task, no embeddings of its tiles, bad --group-by
        raise HeadsError(str(error)) from None
    foreign = [c for c in tiles.classes if c not in card.classes]
    if foreign:
        raise HeadsError(
            f"task {task!r} has labels {', '.join(foreign)} that head {card.name!r} does not know; its "
            f"classes: {', '.join(card.classes)}; the task's: {', '.join(tiles.classes)}"
        )
    y = np.array([card.classes.index(c) for c in tiles.classes], np.int64)[tiles.codes]
    keys, groups = tiles.keys, tiles.groups
    notes = list(tiles.notes)
    sides = SplitSides.of(catalog, card.name)
    side = np.asarray(sides.of_tiles(pa.array(id_strings(keys), pa.string())).to_pylist(), dtype=object)
    excluded = {TRAIN: int((side == TRAIN).sum()), VALIDATION: int((side == VALIDATION).sum())}
    if sides.known and not include_training:
        keep = side == "none"
        if not keep.any():
            raise HeadsError(
                f"all {len(keys)} labelled tiles of task {task!r} are in the training or validation set of "
                f"head {card.name!r}; label other tiles, or pass --include-training to score them anyway"
            )
        keys, groups, y = keys[keep], groups[keep], y[keep]
    probabilities = np.asarray(estimator.predict_proba(_vectors(catalog, card, task, keys)), np.float64)
    binary = card.positive_class is not None
    predicted = _predicted(probabilities, card.threshold if binary else None)
    k = len(card.classes)
    point = scores(y, probabilities, predicted, k)
    samples = _bootstrap(y, probabilities, predicted, groups, k, bootstrap, seed, progress)
    metrics = {}
    for key, value in point.items():
        drawn = np.array([s[key] for s in samples], np.float64)
        drawn = drawn[~np.isnan(drawn)]
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = (
            (np.percentile(drawn, [tail, 100 - tail]).tolist()) if len(drawn) else (math.nan, math.nan)
        )
        metrics[key] = Score(value, float(low), float(high))
    n_groups = len(np.unique(groups))
    if n_groups < FEW_GROUPS:
        notes.append(
            f"only {n_groups} {tiles.group_by} group(s): the intervals say little; label tiles of more "
            f"{tiles.group_by}s, or choose another --group-by"
        )
    missing = [c for c in card.classes if c not in tiles.classes]
    if missing:
        notes.append(f"the task has no tiles of class {', '.join(missing)}; its scores leave them out")
    return EvaluationReport(
        head=card.name,
        task=task,
        classes=list(card.classes),
        positive_class=card.positive_class,
        threshold=card.threshold if binary else None,
        tiles=len(y),
        groups=n_groups,
        group_by=tiles.group_by,
        excluded=excluded,
        split_known=sides.known,
        include_training=include_training,
        metrics=metrics,
        confusion=confusion_matrix(y, predicted, k).tolist(),
        bootstrap=bootstrap,
        notes=notes,
        y=y,
        probabilities=probabilities,
        tile_ids=id_strings(keys),
    )


# -- scores -----------------------------------------------------------------------------------------------


def scores(y: np.ndarray, probabilities: np.ndarray, predicted: np.ndarray, k: int) -> dict[str, float]:
    """auroc, average_precision (macro one-vs-rest over the classes present for k > 2), balanced_accuracy
    and f1 of the positive class (binary) or macro_f1 (over the classes true or predicted, as
    scikit-learn's default) at the given predictions."""
    matrix = confusion_matrix(y, predicted, k)
    true, guessed, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    present = true > 0
    denominator = true + guessed
    f1 = np.divide(2 * hits, denominator, out=np.zeros(k), where=denominator > 0)
    out = {"auroc": split_scores(y, probabilities, k)["auroc"]}  # embedstore's, as the probe's and training's
    if k == 2:
        out["average_precision"] = average_precision(y == 1, probabilities[:, 1])
    else:
        sides = [c for c in range(k) if 0 < true[c] < len(y)]
        out["average_precision"] = _mean([average_precision(y == c, probabilities[:, c]) for c in sides])
    out["balanced_accuracy"] = float((hits[present] / true[present]).mean()) if present.any() else math.nan
    if k == 2:
        out["f1"] = float(f1[1])
    else:
        out["macro_f1"] = float(f1[denominator > 0].mean())
    return out


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Average precision: the precision at each distinct score, weighted by the recall it adds (what
    scikit-learn's average_precision_score computes); NaN without positives."""
    positives = int(positive.sum())
    if positives == 0:
        return math.nan
    order = np.argsort(-score, kind="mergesort")
    ordered = score[order]
    last = np.r_[ordered[1:] != ordered[:-1], True]  # the last row of each distinct score
    hits = np.cumsum(positive[order])[last]
    precision = hits / (np.flatnonzero(last) + 1)
    return float(np.sum(np.diff(np.r_[0, hits]) / positives * precision))


def confusion_matrix(y: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + predicted, minlength=k * k).reshape(k, k)


def _predicted(probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
    """The predicted class: p(positive) >= threshold for a binary head, else the most probable."""
    if threshold is not None:
        return (probabilities[:, 1] >= threshold).astype(np.int64)
    return probabilities.argmax(axis=1)


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _bootstrap(y, probabilities, predicted, groups, k, n, seed, progress) -> list[dict[str, float]]:
    """Scores of n resamples: groups drawn with replacement, each drawn group's tiles taken whole."""
    _, group_of = np.unique(groups, return_inverse=True)
    count = int(group_of.max()) + 1
    rng = np.random.default_rng(seed)
    out = []
    for _ in tqdm(range(n), desc="bootstrap", unit="resample", disable=not progress, leave=False):
        weight = np.bincount(rng.integers(0, count, count), minlength=count)[group_of]
        rows = np.repeat(np.arange(len(y)), weight)
        out.append(scores(y[rows], probabilities[rows], predicted[rows], k))
    return out


def _vectors(catalog, card: HeadCard, task: str, keys: np.ndarray) -> np.ndarray:
    """The backbone's vectors (view 0) of the tiles `keys` (sorted UTF-8 bytes), in that order."""
    x, ids, _ = EmbeddingQuery.of(catalog, card.backbone).task(task).columns().to_numpy()
    rows, found = IdLookup(ids).find(keys, last=True)
    if not found.all():
        raise HeadsError(
            f"tile {id_strings(keys[~found][:1])[0]} has no vector; run `embedstore embed` again"
        )
    return np.ascontiguousarray(x[rows], dtype=np.float32)


def _show(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
