"""Group-aware stratified folds, the same for every backbone so that comparisons are paired."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import EmbedstoreError


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


DRAWS = 8  # randomised greedy draws per call; one of the best-stratified is kept
TOLERANCE = 2.0  # a draw whose spread is within this factor of the best's may be kept


def group_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[Split]:
    """`folds` splits in which no group is in both train and test and classes are spread evenly.

    Each seed visits the groups in its own random order (larger groups first on the whole) and puts
    each where it best evens every class's share across the folds (see `assign_groups`), so different
    seeds give different folds whenever the groups allow it. Deterministic for a given seed.
    """
    positions = np.arange(len(labels))
    fold_of = _fold_of_tiles(labels, groups, folds, seed)
    return [
        Split(seed, fold, positions[fold_of != fold], positions[fold_of == fold]) for fold in range(folds)
    ]


def inner_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) positions inside a training set; fewer folds when its groups are few."""
    spread = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    counts = np.unique(labels, return_counts=True)[1]
    folds = max(2, min(folds, spread, int(counts.min())))
    positions = np.arange(len(labels))
    fold_of = _fold_of_tiles(labels, groups, folds, seed)
    return [(positions[fold_of != fold], positions[fold_of == fold]) for fold in range(folds)]


def assign_groups(counts: np.ndarray, folds: int, seed: int, draws: int = DRAWS) -> np.ndarray:
    """The fold of each group, from `counts` (groups x classes, tiles of each class in each group).

    A randomised greedy: each of `draws` draws visits the groups by size times a random factor in
    [0.5, 1.5) (so big groups come early, but in an order that differs per seed) and puts each group in
    the fold where it adds least to the spread of every class's share (and of the fold sizes) across
    the folds; exact ties go to a random fold. Among the draws with the fewest folds missing a class,
    one whose spread is within TOLERANCE x the least is kept, chosen at random (the very best alone
    would give every seed the same folds when groups are few). Every fold gets a group when there are
    at least `folds` groups (an empty fold always costs least).
    """
    n_groups = len(counts)
    if n_groups and (counts.sum(axis=1) == 1).all():
        return _deal_tiles(counts.argmax(axis=1), folds, seed)
    columns = np.column_stack([counts, counts.sum(axis=1)]).astype(np.float64)  # the classes, then size
    totals = columns.sum(axis=0)
    weighted = columns / np.where(totals > 0, totals, 1.0) ** 2
    rng = np.random.default_rng([seed, folds, n_groups])
    keys = columns[:, -1] * rng.uniform(0.5, 1.5, size=(draws, n_groups))
    orders = np.argsort(-keys, axis=1, kind="stable")
    jitter = rng.random((draws, n_groups, folds)) * 1e-12  # breaks exact ties only
    load = np.zeros((draws, folds, columns.shape[1]))
    fold_of = np.empty((draws, n_groups), dtype=np.int64)
    rows = np.arange(draws)
    for step in range(n_groups):
        group = orders[:, step]
        # variance across folds of each column's share grows by 2 * load[f] . v / total^2 (+ a constant)
        cost = np.einsum("dfc,dc->df", load, weighted[group]) + jitter[:, step]
        chosen = cost.argmin(axis=1)
        load[rows, chosen] += columns[group]
        fold_of[rows, group] = chosen
    present = totals[:-1] > 0
    shares = load[:, :, :-1][:, :, present] / totals[:-1][present]
    missing = (shares == 0).sum(axis=(1, 2))
    spread = shares.var(axis=1).sum(axis=1) + (load[:, :, -1] / totals[-1]).var(axis=1)
    fewest = missing == missing.min()
    best = spread[fewest].min()
    near = np.flatnonzero(fewest & (spread <= TOLERANCE * best + 1e-9))  # near the best: keep seeds apart
    return fold_of[near[rng.integers(len(near))]]


def stratification(labels: np.ndarray, test_sets: list[np.ndarray]) -> float:
    """How unevenly the classes spread over test folds: the largest, over classes, of the standard
    deviation across folds of the class's share of the fold (0: every fold has the same class mix)."""
    classes = np.unique(labels)
    shares = np.array([[np.mean(labels[test] == c) for c in classes] for test in test_sets])
    return float(shares.std(axis=0).max())


def distinct_splits(
    folds: list[Split], groups: int = 0, group_by: str | None = None
) -> tuple[list[Split], list[str]]:
    """`folds` without the splits whose test set an earlier split already had, and a note naming the
    seeds that repeated earlier folds (few groups leave few partitions): the statistics count distinct
    splits only."""
    seen: set[bytes] = set()
    kept: list[Split] = []
    repeated: list[Split] = []
    for split in folds:
        key = np.sort(split.test).tobytes()
        (repeated if key in seen else kept).append(split)
        seen.add(key)
    if not repeated:
        return kept, []
    of = f" ({groups} {group_by or ''} groups)".replace("  ", " ") if groups else ""
    whole = sorted({s.seed for s in repeated} - {s.seed for s in kept})
    if whole and len(repeated) == sum(1 for s in folds if s.seed in whole):
        said = " and ".join(", ".join(map(str, whole)).rsplit(", ", 1))
        first = "seeds" if len(whole) > 1 else "seed"
        what = f"{first} {said} gave the same folds as earlier seeds"
    else:
        what = f"{len(repeated)} of the {len(folds)} splits repeated an earlier seed's test set"
    return kept, [f"{what}{of}: the intervals count {len(kept)} distinct splits, not {len(folds)}"]


def _deal_tiles(classes: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Folds of one-tile groups: each class's tiles in a random order dealt round the folds in turn
    (the deal running on from class to class), so every class and fold size is as even as can be."""
    rng = np.random.default_rng([seed, folds, len(classes)])
    order = np.lexsort((rng.random(len(classes)), classes))  # by class, randomly within it
    fold_of = np.empty(len(classes), dtype=np.int64)
    fold_of[order] = rng.permutation(folds)[(rng.integers(folds) + np.arange(len(classes))) % folds]
    return fold_of


def _fold_of_tiles(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each tile: its group's, from `assign_groups` over the sorted distinct groups."""
    names, group_of = np.unique(groups, return_inverse=True)
    if len(names) < folds:
        raise EmbedstoreError(
            f"{len(names)} groups cannot fill {folds} folds; use at most {len(names)} folds"
        )
    _, class_of = np.unique(labels, return_inverse=True)
    counts = np.zeros((len(names), int(class_of.max()) + 1 if len(class_of) else 0), dtype=np.int64)
    np.add.at(counts, (group_of, class_of), 1)
    return assign_groups(counts, folds, seed)[group_of]


def few_shot(labels: np.ndarray, train: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """`shots` training positions per class (all of a class that has fewer), drawn from `train`."""
    chosen = []
    for label in np.unique(labels[train]):
        members = train[labels[train] == label]
        chosen.append(rng.choice(members, min(shots, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))
