"""Group-aware stratified folds, the same for every backbone so that comparisons are paired."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EmbedstoreError


@dataclass(frozen=True)
class Split:
    """One train/test split: positions into the task's tiles (sorted by tile id)."""

    seed: int
    fold: int
    train: np.ndarray
    test: np.ndarray


def check_task(labels: np.ndarray, groups: np.ndarray, folds: int, task: str, group_by: str) -> None:
    """One-line errors for a task the folds cannot split: one class, a class or too few groups."""
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise EmbedstoreError(
            f"task {task!r} has one class ({classes[0] if len(classes) else 'none'}); "
            "a probe needs at least two: import labels of another class"
        )
    small = [f"{c} ({n})" for c, n in zip(classes, counts, strict=True) if n < folds]
    if small:
        raise EmbedstoreError(
            f"task {task!r}: class {', '.join(small)} has fewer tiles than --folds {folds}; "
            f"label more tiles or use --folds {max(2, int(counts.min()))}"
        )
    for label in classes:
        spread = len(np.unique(groups[labels == label]))
        if spread < folds:
            raise EmbedstoreError(
                f"task {task!r}: class {label} lies in {spread} {group_by} group(s), fewer than --folds "
                f"{folds}; use --folds {max(2, spread)} or another --group-by"
            )


def group_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[Split]:
    """`folds` splits in which no group is in both train and test and classes are spread evenly.

    scikit-learn's StratifiedGroupKFold, shuffled by `seed`.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    positions = np.arange(len(labels))
    splits = []
    for fold, (train, test) in enumerate(splitter.split(positions, labels, groups)):
        splits.append(Split(seed, fold, np.sort(train), np.sort(test)))
    return splits


def inner_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, ...]]:
    """(train, validation) positions inside a training set; fewer folds when its groups are few."""
    from sklearn.model_selection import StratifiedGroupKFold

    spread = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    counts = np.unique(labels, return_counts=True)[1]
    folds = max(2, min(folds, spread, int(counts.min())))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.arange(len(labels)), labels, groups)]


def few_shot(labels: np.ndarray, train: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """`shots` training positions per class (all of a class that has fewer), drawn from `train`."""
    chosen = []
    for label in np.unique(labels[train]):
        members = train[labels[train] == label]
        chosen.append(rng.choice(members, min(shots, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))
