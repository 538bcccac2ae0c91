"""`probe`: every backbone through the same folds with kNN, prototype and linear probes, then the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..core.validation import Name, check_value
from ..embeddings import EmbeddingQuery
from ..evaluate import folds as splits
from ..evaluate.metrics import split_scores
from ..evaluate.neighbours import cross_fold_neighbours, is_partition
from ..evaluate.space import VectorSpace
from ..evaluate.tasks import TaskTiles, aligned_vectors, resolve_backbones, task_tiles
from ..storage.catalog import Catalog
from . import classifiers, stability
from .indicators import backbone_indicators
from .options import ProbeOptions
from .report import ProbeReport

Say = Callable[[str], None]


def run_probe(
    catalog: Catalog,
    task: str | None,
    backbones: str | list[str],
    options: ProbeOptions,
    progress: bool = False,
    say: Say | None = None,
) -> ProbeReport:
    """Probe `backbones` on `task` (None: label-free indicators only)."""
    check_value("--task", task, Name(), optional=True)
    started = time.perf_counter()
    keys = resolve_backbones(catalog, backbones)
    if task is None:
        indicators = {key: backbone_indicators(_query(catalog, key, None)).to_dict() for key in keys}
        return ProbeReport.indicators_only(keys, indicators, options, time.perf_counter() - started)
    tiles = task_tiles(catalog, task, keys, options.group_by)
    for note in tiles.notes:
        (say or (lambda _: None))(note)
    names = np.asarray(tiles.classes, dtype=object)[tiles.codes]  # messages name classes, not codes
    splits.check_task(names, tiles.groups, options.folds, task, tiles.group_by)
    indicators = {}
    if options.indicators:  # over the task's tiles
        indicators = {key: backbone_indicators(_query(catalog, key, task)).to_dict() for key in keys}
    drawn = [
        split
        for seed in range(options.seeds)
        for split in splits.group_folds(tiles.codes, tiles.groups, options.folds, seed)
    ]
    groups = len(np.unique(tiles.groups))
    folds, notes = splits.distinct_splits(drawn, groups, tiles.group_by)  # the statistics count each once
    notes += knn_depth_notes(options, folds)
    for note in notes:
        (say or (lambda _: None))(note)
    inner: dict[tuple[int, int], list] = {}  # (seed, fold) -> the linear probe's inner folds, one per split
    rows: list[dict] = []
    shot_rows: list[dict] = []
    oof = _out_of_fold(tiles, options, folds)
    bar = tqdm(total=len(keys) * len(folds), desc="probe", unit="fold", disable=not progress, leave=False)
    for key in keys:
        x = aligned_vectors(catalog, key, tiles)
        neighbours = _all_folds_neighbours(x, folds, options) if "knn" in options.probes else {}
        chosen_cs: list[float | None] = []
        for split in folds:
            previous_c = chosen_cs[-1] if chosen_cs else None
            at = (split.seed, split.fold)
            if "linear" in options.probes and at not in inner:
                inner[at] = _inner_folds(tiles, split, options.inner_folds)
            found = probe_split(x, tiles, split, options, previous_c, neighbours.get(at), inner.get(at))
            chosen_cs.append(found.linear_c)
            if oof is not None:
                oof.record(key, split.seed, split.fold, found.ranked)
            rows += [{"backbone": key, "seed": split.seed, "fold": split.fold, **r} for r in found.rows]
            bar.update()
        if options.shots:
            shot_rows += few_shot_curve(key, x, tiles, folds, options, _typical_c(chosen_cs))
    bar.close()
    shares = stability.top_shares(oof, options.bootstrap) if oof is not None else None
    report = ProbeReport.build(
        tiles, keys, rows, shot_rows, indicators, options, folds, time.perf_counter() - started, shares
    )
    report.notes += notes
    return report


def knn_depth_notes(options: ProbeOptions, folds: list[splits.Split]) -> list[str]:
    """A warning when a --knn-k is at least the smallest training fold: kNN there is clamped to every
    training tile (k = the fold's size), so its votes are the class frequencies, not neighbours."""
    if "knn" not in options.probes or not folds:
        return []
    smallest = min(len(split.train) for split in folds)
    deep = [k for k in options.knn_k if k >= smallest]
    if not deep:
        return []
    return [
        f"--knn-k {','.join(map(str, deep))}: the smallest training fold holds {smallest} tiles, so kNN "
        f"was clamped to k={smallest} (every training tile votes: the class frequencies, not neighbours); "
        f"use k < {smallest}"
    ]


@dataclass
class SplitScores:
    """Every probe's metrics on one split ({probe, metric, value} rows), the C the linear probe chose and
    the ranked probes' test probabilities (knn at rank_k, prototype, linear)."""

    rows: list[dict]
    linear_c: float | None
    ranked: dict[str, np.ndarray] = field(default_factory=dict)


def probe_split(
    x: np.ndarray,
    tiles: TaskTiles,
    split: splits.Split,
    options: ProbeOptions,
    previous_c: float | None = None,
    knn_neighbours: np.ndarray | None = None,
    inner: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> SplitScores:
    """Scores of every probe on one split; the linear probe's search for C starts at `previous_c`, the C
    an earlier split of the same backbone chose (see `classifiers.linear_probabilities`). kNN uses
    `knn_neighbours` (row positions of each test row's nearest training rows) and the linear probe the
    `inner` folds when given (the same for every backbone)."""
    classes = len(tiles.classes)
    y = tiles.codes
    train, test = x[split.train], x[split.test]
    found: list[tuple[str, np.ndarray]] = []
    chosen_c = None
    if "knn" in options.probes:
        if knn_neighbours is not None:
            by_k = classifiers.knn_votes(y[knn_neighbours], options.knn_k, classes)
        else:
            by_k = classifiers.knn_probabilities(train, y[split.train], test, options.knn_k, classes)
        found += [(f"knn@{k}", probabilities) for k, probabilities in by_k.items()]
    if "prototype" in options.probes:
        found.append(("prototype", classifiers.prototype_probabilities(train, y[split.train], test, classes)))
    if "linear" in options.probes:
        if inner is None:
            inner = _inner_folds(tiles, split, options.inner_folds)
        fit = classifiers.linear_probabilities(
            train, y[split.train], test, classes, inner, first_c=previous_c
        )
        found.append(("linear", fit.probabilities))
        chosen_c = fit.c
    rows = [
        {"probe": probe, "metric": metric, "value": value}
        for probe, probabilities in found
        for metric, value in split_scores(y[split.test], probabilities, classes).items()
    ]
    ranked_names = {f"knn@{options.rank_k}": "knn", "prototype": "prototype", "linear": "linear"}
    ranked = {ranked_names[probe]: p for probe, p in found if probe in ranked_names}
    return SplitScores(rows, chosen_c, ranked)


def few_shot_curve(
    key: str,
    x: np.ndarray,
    tiles: TaskTiles,
    folds: list[splits.Split],
    options: ProbeOptions,
    linear_c: float | None,
) -> list[dict]:
    """The probes trained on `shots` tiles per class (seed 0's folds, `shot_draws` draws each); kNN uses
    k = min(rank_k, shots) and the linear probe the C most often chosen with all labels."""
    classes = len(tiles.classes)
    y = tiles.codes
    rows = []
    for split in [s for s in folds if s.seed == 0]:
        largest = int(np.bincount(y[split.train]).max())
        for shots in [s for s in options.shots or () if s < largest]:
            for draw in range(options.shot_draws):
                rng = np.random.default_rng([split.fold, shots, draw])
                chosen = splits.few_shot(y, split.train, shots, rng)
                train, train_y, test = x[chosen], y[chosen], x[split.test]
                found = []
                if "knn" in options.probes:
                    k = min(options.rank_k, shots)
                    found.append(
                        ("knn", classifiers.knn_probabilities(train, train_y, test, [k], classes)[k])
                    )
                if "prototype" in options.probes:
                    found.append(
                        ("prototype", classifiers.prototype_probabilities(train, train_y, test, classes))
                    )
                if "linear" in options.probes and linear_c is not None:
                    fit = classifiers.linear_probabilities(train, train_y, test, classes, [], cs=[linear_c])
                    found.append(("linear", fit.probabilities))
                for probe, probabilities in found:
                    value = split_scores(y[split.test], probabilities, classes)[options.metric]
                    rows.append(
                        {
                            "backbone": key,
                            "probe": probe,
                            "shots": shots,
                            "fold": split.fold,
                            "draw": draw,
                            "value": value,
                        }
                    )
    return rows


def _all_folds_neighbours(
    x: np.ndarray, folds: list[splits.Split], options: ProbeOptions
) -> dict[tuple[int, int], np.ndarray]:
    """(seed, fold) -> kNN's neighbours of that fold's test rows, for every seed whose test sets partition
    the rows, computed together (half the products of searching fold by fold; see `neighbours`)."""
    unit = VectorSpace("cosine").prepare(x)
    found = {}
    for seed in sorted({split.seed for split in folds}):
        of_seed = [split for split in folds if split.seed == seed]
        tests = [split.test for split in of_seed]
        smallest_train = min(len(split.train) for split in of_seed)
        if not is_partition(tests, len(x)) or smallest_train == 0:
            continue  # the split-by-split search handles it
        deepest = min(max(options.knn_k), smallest_train)
        for split, positions in zip(of_seed, cross_fold_neighbours(unit, tests, deepest), strict=True):
            found[(seed, split.fold)] = positions
    return found


def _out_of_fold(
    tiles: TaskTiles, options: ProbeOptions, folds: list[splits.Split]
) -> stability.OutOfFold | None:
    """Where the ranked probes' test outputs are kept for the bootstrap (None when it is skipped)."""
    if not options.bootstrap:
        return None
    return stability.OutOfFold.of(tiles.codes, tiles.groups, len(tiles.classes), options.metric, folds)


def _inner_folds(tiles: TaskTiles, split: splits.Split, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The linear probe's (train, validation) folds inside `split`'s training rows."""
    y, groups = tiles.codes[split.train], tiles.groups[split.train]
    return splits.inner_folds(y, groups, folds, 1000 * split.seed + split.fold)


def _query(catalog: Catalog, key: str, task: str | None) -> EmbeddingQuery:
    query = EmbeddingQuery.of(catalog, key)
    return query.task(task) if task is not None else query


def _typical_c(chosen: list[float | None]) -> float | None:
    values = [c for c in chosen if c is not None]
    if not values:
        return None
    options, counts = np.unique(values, return_counts=True)
    return float(options[counts.argmax()])
