"""The group-aware splitter: folds that differ per seed when the groups allow it, no group on both sides,
classes spread about as evenly as scikit-learn's StratifiedGroupKFold spreads them, and a probe whose
intervals and tests count each distinct split once."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from embedstore.core.errors import EmbedstoreError
from embedstore.evaluate import folds as splits
from embedstore.evaluate.metrics import corrected_interval, paired_p_value
from tests.helpers import add_task, add_vectors, vector_store


def distinct_mixes(images: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The issue's case: `images` groups of 30 to 200 tiles, each with its own mix of 3 classes."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(30, 200, images)
    mixes = rng.dirichlet([1, 1, 1], images)
    labels = np.concatenate([rng.choice(3, n, p=mix) for n, mix in zip(sizes, mixes, strict=True)])
    return labels, np.repeat([f"img{i}" for i in range(images)], sizes)


def partition(found: list[splits.Split]) -> frozenset[tuple[int, ...]]:
    """The folds' test sets, fold order ignored."""
    return frozenset(tuple(s.test.tolist()) for s in found)


def test_seeds_give_different_folds_where_the_old_splitter_repeated_them():
    labels, groups = distinct_mixes()
    old = [
        frozenset(tuple(np.sort(test)) for _, test in splitter.split(labels, labels, groups))
        for splitter in (StratifiedGroupKFold(5, shuffle=True, random_state=s) for s in range(3))
    ]
    assert len(set(old)) == 1  # the issue: StratifiedGroupKFold's shuffle left seeds 0, 1, 2 alike
    found = [partition(splits.group_folds(labels, groups, 5, seed)) for seed in range(10)]
    assert len(set(found)) == 10
    inner = [
        frozenset(tuple(v.tolist()) for _, v in splits.inner_folds(labels, groups, 3, seed))
        for seed in range(5)
    ]
    assert len(set(inner)) == 5


@pytest.mark.parametrize("folds", [2, 5])
def test_folds_keep_groups_apart_cover_every_tile_and_repeat_per_seed(folds):
    labels, groups = distinct_mixes(seed=1)
    everything = np.arange(len(labels))
    for seed in range(3):
        found = splits.group_folds(labels, groups, folds, seed)
        assert [s.fold for s in found] == list(range(folds)) and {s.seed for s in found} == {seed}
        for split in found:
            assert len(split.test) and not set(groups[split.train]) & set(groups[split.test])
            assert np.array_equal(np.sort(np.concatenate([split.train, split.test])), everything)
            assert set(labels[split.test]) == set(labels)
        assert np.array_equal(np.sort(np.concatenate([s.test for s in found])), everything)
        again = splits.group_folds(labels, groups, folds, seed)
        assert all(
            np.array_equal(a.test, b.test) and np.array_equal(a.train, b.train)
            for a, b in zip(found, again, strict=True)
        )


def sgkf_stratification(labels, groups, folds, seed) -> float:
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return splits.stratification(labels, [test for _, test in splitter.split(labels, labels, groups)])


@pytest.mark.parametrize("images", [20, 60])
def test_classes_spread_about_as_evenly_as_stratified_group_k_fold(images):
    """Mean over seeds of the worst class's spread of shares across folds: within 1.5x of scikit-learn's
    (measured: 0.036 vs 0.036 on 20 images, 0.009 vs 0.011 on 60), and a few points at most."""
    labels, groups = distinct_mixes(images, seed=2)
    ours = np.mean(
        [
            splits.stratification(labels, [s.test for s in splits.group_folds(labels, groups, 5, seed)])
            for seed in range(5)
        ]
    )
    theirs = np.mean([sgkf_stratification(labels, groups, 5, seed) for seed in range(5)])
    assert ours <= 1.5 * theirs and ours < 0.08


def test_one_tile_groups_are_dealt_evenly():
    labels = (np.random.default_rng(0).random(1003) < 0.05).astype(int)  # 5 % positive, one tile per group
    groups = np.arange(len(labels)).astype(str)
    first = splits.group_folds(labels, groups, 5, 0)
    for split in first:
        assert abs(len(split.test) - len(labels) / 5) <= 1
        for c in (0, 1):
            assert abs((labels[split.test] == c).sum() - (labels == c).sum() / 5) <= 1
    assert partition(first) != partition(splits.group_folds(labels, groups, 5, 1))


def test_few_groups_give_one_partition_and_duplicates_are_counted_once():
    labels = np.tile([0, 1], 50)
    groups = np.repeat([f"g{i}" for i in range(5)], 20)
    drawn = [s for seed in range(3) for s in splits.group_folds(labels, groups, 5, seed)]
    assert len({partition([s for s in drawn if s.seed == seed]) for seed in range(3)}) == 1
    kept, notes = splits.distinct_splits(drawn, 5, "slide")
    assert [(s.seed, s.fold) for s in kept] == [(0, f) for f in range(5)]
    assert notes == [
        "seeds 1 and 2 gave the same folds as earlier seeds (5 slide groups): "
        "the intervals count 5 distinct splits, not 15"
    ]
    assert splits.distinct_splits(kept) == (kept, [])


def test_splits_that_repeat_only_some_folds_are_dropped_one_by_one():
    labels = np.tile([0, 1], 60)
    groups = np.repeat([f"g{i}" for i in range(6)], 20)  # 6 groups in 5 folds: partitions share folds
    drawn = [s for seed in range(6) for s in splits.group_folds(labels, groups, 5, seed)]
    kept, notes = splits.distinct_splits(drawn, 6, "slide")
    tests = {tuple(s.test.tolist()) for s in drawn}
    assert len(kept) == len(tests) < len(drawn)
    assert notes and f"the intervals count {len(kept)} distinct splits, not {len(drawn)}" in notes[0]


# -- the probe counts distinct splits -------------------------------------------------------------------


@pytest.fixture(scope="module")
def five_slides(tmp_path_factory):
    """100 tiles on 5 slides, two classes on every slide, a backbone with class signal and one without."""
    rng = np.random.default_rng(0)
    codes = np.arange(100) % 2
    good = (codes[:, None] * 0.8 + rng.normal(size=(100, 8)) + 1).astype(np.float32)
    store = vector_store(tmp_path_factory.mktemp("five") / "store", good, slides=5, key="good.v")
    add_vectors(store, "noise.v", (rng.normal(size=(100, 8)) + 1).astype(np.float32))
    add_task(store, "ab", {f"t{i:06d}": "ab"[c] for i, c in enumerate(codes)})
    return store


def test_probe_with_one_possible_partition_counts_five_splits_not_fifteen(five_slides):
    report = five_slides.probe(
        "ab", "good.v,noise.v", folds=5, seeds=3, probes=("prototype",), shots=None, indicators=False
    )
    assert report.distinct_splits == 5 and report.to_dict()["distinct_splits"] == 5
    assert any("the intervals count 5 distinct splits, not 15" in note for note in report.notes)
    assert "5 distinct splits, not 15" in report.format()
    assert "5 folds x 3 seeds (5 distinct splits)" in report.format()
    chosen = report.scores.filter(pl.col("metric") == "balanced_accuracy")
    assert chosen.group_by("backbone").len()["len"].to_list() == [5, 5]
    assert set(chosen["seed"].to_list()) == {0}

    # the interval and test by hand from the 5 distinct splits: what a user would compute from the scores
    fraction = 1 / 4  # 5 equal slides: 20 test and 80 training tiles per split
    values = {
        key: chosen.filter(pl.col("backbone") == key).sort("fold")["value"].to_numpy()
        for key in ("good.v", "noise.v")
    }
    row = report.summary.filter(
        (pl.col("backbone") == "good.v") & (pl.col("metric") == "balanced_accuracy")
    ).row(0, named=True)
    expected = corrected_interval(values["good.v"], fraction)
    half = 2.7764451051977987 * math.sqrt(
        (1 / 5 + fraction) * np.var(values["good.v"], ddof=1)
    )  # t(0.975, 4)
    assert row["splits"] == 5
    assert (
        row["ci_low"]
        == pytest.approx(max(0.0, expected.low))
        == pytest.approx(max(0.0, expected.mean - half))
    )
    assert row["ci_high"] == pytest.approx(min(1.0, expected.high))
    # counting the duplicates (the old behaviour: 15 splits, the same 5 scores thrice) narrows it
    counted_thrice = corrected_interval(np.tile(values["good.v"], 3), fraction)
    assert counted_thrice.high - counted_thrice.low < 0.75 * (expected.high - expected.low)
    ranking = report.ranking.filter(pl.col("rank") == 2).row(0, named=True)
    best, other = (values[report.best("prototype")], values[ranking["backbone"]])
    assert ranking["p_vs_best"] == pytest.approx(paired_p_value(best, other, fraction))
    assert paired_p_value(np.tile(best, 3), np.tile(other, 3), fraction) < ranking["p_vs_best"]


def test_probe_on_distinct_mixes_runs_every_seed(tmp_path):
    """20 slides with their own class mixes: 3 seeds give 15 distinct splits (the old splitter gave 5)."""
    slides = 20
    tiles = 400
    rng = np.random.default_rng(1)
    share = rng.uniform(0.1, 0.9, slides)
    codes = (rng.random(tiles) < share[np.arange(tiles) % slides]).astype(int)
    store = vector_store(
        tmp_path / "store", (rng.normal(size=(tiles, 4)) + 1).astype(np.float32), slides=slides
    )
    add_task(store, "ab", {f"t{i:06d}": "ab"[c] for i, c in enumerate(codes)})
    report = store.probe("ab", "all", folds=5, seeds=3, probes=("prototype",), shots=None, indicators=False)
    assert report.distinct_splits == 15 and not any("distinct splits" in n for n in report.notes)
    assert report.summary["splits"].unique().to_list() == [15]


def test_probe_where_seeds_repeat_some_folds_scores_each_kept_split_once(tmp_path):
    """6 slides in 5 folds: later seeds repeat some of seed 0's test sets; kNN (which searches a seed's
    folds together only when they partition the tiles) and the linear probe still score every kept split."""
    rng = np.random.default_rng(2)
    codes = (np.arange(120) // 6) % 2  # tile i is on slide i % 6: both classes on every slide
    vectors = (codes[:, None] * 0.8 + rng.normal(size=(120, 8)) + 1).astype(np.float32)
    store = vector_store(tmp_path / "store", vectors, slides=6, key="good.v")
    add_task(store, "ab", {f"t{i:06d}": "ab"[c] for i, c in enumerate(codes)})
    report = store.probe(
        "ab", "good.v", folds=5, seeds=4, probes=("knn", "linear"), shots=None, indicators=False
    )
    kept = report.scores.filter((pl.col("probe") == "linear") & (pl.col("metric") == "balanced_accuracy"))
    assert 5 < report.distinct_splits == kept.height < 20
    assert report.scores.filter(pl.col("probe") == "knn@20")["value"].is_nan().sum() == 0
    assert any(f"count {report.distinct_splits} distinct splits, not 20" in note for note in report.notes)


def test_fewer_groups_than_folds_is_one_line_error():
    with pytest.raises(EmbedstoreError, match="2 groups cannot fill 3 folds; use at most 2 folds"):
        splits.group_folds(np.array([0, 1, 0, 1]), np.array(["a", "a", "b", "b"]), 3, 0)
