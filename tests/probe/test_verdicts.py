"""The probe's ranking in words and the bootstrap stability of its top pick: clear winners are called
clear, copies are called undecided, the top group is contiguous from rank 1, the resampled metrics equal
the ranking's with every weight 1 and scikit-learn's with integer weights, and the report's files carry
it all."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

import embedstore
from embedstore.probe import ProbeOptions, ProbeReport, stability
from embedstore.probe.verdicts import mark, stray_notes, top_group_of
from tests.helpers import add_task, add_vectors, vector_store

TILES, DIM, SLIDES = 240, 16, 12
PROBES = ("knn", "prototype", "linear")


@dataclass
class Levels:
    store: embedstore.Store


def levels_store(path: Path) -> embedstore.Store:
    """240 tiles on 12 slides, three classes; backbones strong.v (classes far apart), weak.v (barely
    apart), noise.v (no signal), twin.v (strong.v's vectors exactly) and near.v (strong.v plus a little
    noise). Task three (3 classes) and task two (2 classes: c0 against the rest)."""
    rng = np.random.default_rng(5)
    codes = rng.permutation(np.arange(TILES) % 3)
    centres = rng.normal(size=(3, DIM))
    strong = (1.2 * centres[codes] + rng.normal(size=(TILES, DIM)) + 1.0).astype(np.float32)
    weak = (0.25 * centres[codes] + rng.normal(size=(TILES, DIM)) + 1.0).astype(np.float32)
    noise = (rng.normal(size=(TILES, DIM)) + 1.0).astype(np.float32)
    near = (strong + 0.3 * rng.normal(size=(TILES, DIM))).astype(np.float32)
    store = vector_store(path, strong, slides=SLIDES, key="strong.v")
    for key, vectors in (("weak.v", weak), ("noise.v", noise), ("twin.v", strong), ("near.v", near)):
        add_vectors(store, key, vectors)
    ids = [f"t{i:06d}" for i in range(TILES)]
    add_task(store, "three", {t: f"c{c}" for t, c in zip(ids, codes, strict=True)})
    add_task(store, "two", {t: "c0" if c == 0 else "rest" for t, c in zip(ids, codes, strict=True)})
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> embedstore.Store:
    return levels_store(tmp_path_factory.mktemp("levels") / "store")


def probe(store, backbones: str, task: str = "three", **options) -> ProbeReport:
    settings = {"folds": 4, "seeds": 1, "shots": None, "indicators": False, **options}
    return store.probe(task, backbones, **settings)


@pytest.fixture(scope="module")
def distinct(store) -> ProbeReport:
    return probe(store, "strong.v,weak.v,noise.v")


@pytest.fixture(scope="module")
def twins(store) -> ProbeReport:
    return probe(store, "strong.v,twin.v,noise.v")


def ranked(report: ProbeReport, probe_name: str) -> list[dict]:
    return report.ranking.filter(pl.col("probe") == probe_name).sort("rank").to_dicts()


# -- the words ---------------------------------------------------------------------------------------


def test_clearly_different_backbones_get_a_clear_verdict_and_a_stable_pick(distinct):
    found = {v["probe"]: v for v in distinct.verdicts()}
    assert list(found) == list(PROBES)
    for name in PROBES:
        verdict, rows = found[name], ranked(distinct, name)
        assert [r["backbone"] for r in rows] == ["strong.v", "weak.v", "noise.v"], name
        assert verdict["best"] == "strong.v" and verdict["decided"] and verdict["tied"] == []
        assert verdict["top_group"] == ["strong.v"]
        assert "strong.v is best, clearly (every other p < 0.05; picked in" in verdict["text"]
        assert rows[0]["top_share"] >= 0.9 and rows[0]["top_group"], name  # 100 % here
        assert sum(r["top_share"] for r in rows) == pytest.approx(1.0)
        assert verdict["top_share"]["strong.v"] == rows[0]["top_share"]


def test_identical_backbones_are_undecided_and_the_bootstrap_splits_between_them(twins):
    for verdict in twins.verdicts():
        rows = {r["backbone"]: r for r in ranked(twins, verdict["probe"])}
        assert set(verdict["top_group"]) == {"strong.v", "twin.v"} and not verdict["decided"]
        assert "2 of 3 backbones are within the noise of the best (p >= 0.05)" in verdict["text"]
        assert "the data do not decide among them" in verdict["text"]
        assert rows["strong.v"]["top_share"] == rows["twin.v"]["top_share"] == 0.5  # every resample a tie
        assert rows["noise.v"]["top_share"] == 0.0 and not rows["noise.v"]["top_group"]
    text = twins.format()
    assert "the data do not decide among them; the bootstrap picks" in text
    assert "picked  50 %" in text and "picked   0 %" in text


def test_near_identical_backbones_split_the_resamples(store):
    report = probe(store, "strong.v,near.v", seeds=2)
    for name in PROBES:
        shares = {r["backbone"]: r["top_share"] for r in ranked(report, name)}
        assert 0.05 < shares["strong.v"] < 0.95 and shares["near.v"] == pytest.approx(1 - shares["strong.v"])
    verdict = {v["probe"]: v for v in report.verdicts()}["linear"]
    assert not verdict["decided"] and "near.v" in verdict["text"] and "strong.v" in verdict["text"]


def test_the_top_group_is_contiguous_from_rank_1(distinct, twins):
    assert top_group_of([1.0, 0.3, 0.01, 0.2, 0.5], 0.05) == [True, True, False, False, False]
    assert top_group_of([1.0, 0.01, 0.9], 0.05) == [True, False, False]
    assert top_group_of([1.0, float("nan"), 0.9], 0.05) == [True, False, False]
    assert top_group_of([1.0], 0.05) == [True]
    for report in (distinct, twins):
        for name in PROBES:
            flags = [r["top_group"] for r in ranked(report, name)]
            assert flags[0] and flags == sorted(flags, reverse=True)  # a prefix: True..., False...


def handmade(p_values: list[float], shares: list[float] | None = None) -> ProbeReport:
    """A report whose linear ranking has the given p-values (rank order) and bootstrap shares."""
    rows = [
        {
            "probe": "linear",
            "rank": rank,
            "backbone": f"b{rank}",
            "mean": 0.9 - 0.01 * rank,
            "ci_low": 0.8 - 0.01 * rank,
            "ci_high": 0.95 - 0.01 * rank,
            "p_vs_best": p,
            "tied_with_best": p >= 0.05,
        }
        for rank, p in enumerate(p_values, start=1)
    ]
    ranking = pl.DataFrame(rows)
    by_share = {"linear": {f"b{i}": s for i, s in enumerate(shares, start=1)}} if shares else None
    options = ProbeOptions(probes=("linear",))
    report = ProbeReport("t", [r["backbone"] for r in rows], options, 0.0, {}, classes=["a", "b"])
    report.group_by, report.ranking = "slide", mark(ranking, 0.05, by_share)
    report.notes = stray_notes(report.ranking, 0.05, 20)
    return report


def test_a_tied_backbone_below_a_separated_one_is_explained_not_tagged():
    # rank 5 separated (p = 0.01), rank 6 not (p = 0.2): the non-monotonic case the issue reported
    report = handmade([1.0, 0.4, 0.3, 0.2, 0.01, 0.2], [0.5, 0.3, 0.1, 0.1, 0.0, 0.0])
    rows = ranked(report, "linear")
    assert [r["top_group"] for r in rows] == [True, True, True, True, False, False]
    assert [r["tied_with_best"] for r in rows] == [True, True, True, True, False, True]  # still p >= alpha
    (verdict,) = report.verdicts()
    assert verdict["top_group"] == ["b1", "b2", "b3", "b4"] and verdict["tied"] == ["b2", "b3", "b4", "b6"]
    assert verdict["text"].startswith("linear: 4 of 6 backbones are within the noise of the best")
    assert "b6 (rank 6, p = 0.200) is not separated from the best either" in verdict["text"]
    assert "b1 in 50 %, b2 in 30 %, b3 in 10 %, b4 in 10 % of resamples" in verdict["text"]
    (note,) = report.notes
    assert "b6 (rank 6) has p = 0.200 >= 0.05" in note and "ranks below b5 (rank 5, p = 0.010)" in note
    lines = report.format().splitlines()
    tags = {line.split()[1]: line.rsplit("  ", 1)[-1] for line in lines if line.startswith("   ")}
    assert tags == {"b1": "best", "b2": "~ best", "b3": "~ best", "b4": "~ best", "b5": "p=0.010", "b6": "*"}
    assert any(line.startswith("*: p >= 0.05, but ranked below") for line in lines)
    assert any(line.startswith("note: linear: b6 (rank 6)") for line in lines)


def test_verdict_wording_in_the_other_cases():
    (lead,) = handmade([1.0, 0.001, 0.3], [0.9, 0.0, 0.1]).verdicts()
    assert lead["text"].startswith("linear: b1 leads and the next, b2, is clearly worse (p = 0.001)")
    assert "b3 (rank 3, p = 0.300) is not separated" in lead["text"] and not lead["decided"]
    (favoured,) = handmade([1.0, 0.3, 0.001], [0.85, 0.15, 0.0]).verdicts()
    assert (
        "the paired test cannot separate them, though the bootstrap favours b1 (picked in 85 %"
        in (favoured["text"])
    )
    (shaky,) = handmade([1.0, 0.01], [0.4, 0.6]).verdicts()
    assert shaky["decided"] and "but the resamples often pick another" in shaky["text"]
    (untested,) = handmade([1.0, float("nan")]).verdicts()
    assert "fewer than 2 distinct splits" in untested["text"] and not untested["decided"]
    (alone,) = handmade([1.0]).verdicts()
    assert alone["text"] == "linear: b1 is the only backbone probed"
    (plain,) = handmade([1.0, 0.001]).verdicts()
    assert (
        plain["text"] == "linear: b1 is best, clearly (every other p < 0.05)" and plain["top_share"] is None
    )


# -- the bootstrap -----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["balanced_accuracy", "macro_f1", "auroc"])
@pytest.mark.parametrize("task", ["three", "two"])
def test_resampling_with_every_weight_1_gives_the_ranking_means(store, monkeypatch, metric, task):
    kept = {}
    shares = stability.top_shares

    def keep(oof, resamples, seed=stability.SEED):
        kept["oof"] = oof
        return shares(oof, resamples, seed)

    monkeypatch.setattr(stability, "top_shares", keep)
    report = probe(store, "strong.v,weak.v", task=task, metric=metric)
    oof = kept["oof"]
    assert len(oof.index) == len(oof.tests) == 4
    assert all(
        len(v) == len(oof.tests) and all(o is not None for o in v) for v in oof.outputs["linear"].values()
    )
    ones = np.ones((1, int(oof.groups.max()) + 1))
    for name, by_key in stability.resampled_scores(oof, ones).items():
        for row in ranked(report, name):
            assert by_key[row["backbone"]][0] == pytest.approx(row["mean"], abs=1e-12), (name, row)


def reference(metric: str, y: np.ndarray, p: np.ndarray, classes: int) -> float:
    """scikit-learn's value of `metric` (AUROC: one-vs-rest mean, as split_scores)."""
    if metric == "balanced_accuracy":
        return balanced_accuracy_score(y, p.argmax(1))
    if metric == "macro_f1":
        return f1_score(y, p.argmax(1), average="macro", labels=range(classes), zero_division=0)
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in range(classes)]))


@pytest.mark.parametrize("groups", [20, 300])  # AUROC: few groups (quadratic form) or many (per tile)
@pytest.mark.parametrize("ties", [True, False])
def test_weighted_metrics_equal_scikit_learn_on_repeated_tiles(groups, ties):
    rng = np.random.default_rng(3)
    n, classes = 300, 3
    codes = rng.integers(0, classes, n)
    group = rng.integers(0, groups, n).astype(str)
    probabilities = rng.dirichlet(np.ones(classes), n).round(1 if ties else 12)
    probabilities[np.arange(n), codes] += 0.2 * (rng.random(n) < 0.5)
    probabilities = probabilities.astype(np.float32)  # as the probes give them, and as kept
    split = type("Split", (), {"seed": 0, "fold": 0, "test": np.arange(n)})
    weights = stability.group_draws(groups, 5, seed=1)
    for metric in ("balanced_accuracy", "macro_f1", "auroc"):
        oof = stability.OutOfFold.of(codes, group, classes, metric, [split])
        oof.record("k", 0, 0, {"linear": probabilities})
        found = stability.resampled_scores(oof, weights)["linear"]["k"]
        _, local = np.unique(group, return_inverse=True)
        for b in range(len(weights)):
            repeat = weights[b][local].astype(int)  # a tile counts as often as its group was drawn
            y, p = np.repeat(codes, repeat), np.repeat(probabilities, repeat, axis=0)
            expected = reference(metric, y, p, classes)
            assert found[b] == pytest.approx(expected, abs=1e-12), (metric, b)


def test_a_repeated_split_is_kept_once():
    folds = []
    for seed in (0, 1):  # seed 1 repeats seed 0's folds
        for fold, test in enumerate((np.arange(0, 10, 2), np.arange(1, 10, 2))):
            folds.append(type("Split", (), {"seed": seed, "fold": fold, "test": test}))
    oof = stability.OutOfFold.of(np.arange(10) % 2, np.arange(10).astype(str), 2, "auroc", folds)
    assert len(oof.tests) == 2 and oof.index == {(0, 0): 0, (0, 1): 1, (1, 0): 0, (1, 1): 1}


def test_group_draws_are_seeded_and_sum_to_the_group_count():
    draws = stability.group_draws(7, 50)
    assert draws.shape == (50, 7) and set(draws.sum(axis=1)) == {7}
    assert np.array_equal(draws, stability.group_draws(7, 50)) and (draws == 0).any()


def test_bootstrap_zero_skips_it(store):
    report = probe(store, "strong.v,noise.v", bootstrap=0, probes=("prototype",))
    assert report.ranking["top_share"].is_null().all() and report.ranking["top_group"].to_list() == [
        True,
        False,
    ]
    assert "picked" not in report.format()
    assert report.verdicts()[0]["top_share"] is None


# -- files -------------------------------------------------------------------------------------------


def test_json_csv_and_plot_carry_the_verdicts_and_shares(twins, tmp_path):
    found = json.loads(twins.write_json(tmp_path / "p.json").read_text())
    assert found["options"]["bootstrap"] == 200
    assert [v["probe"] for v in found["verdicts"]] == list(PROBES)
    assert all({"text", "tied", "decided", "top_group", "top_share"} <= set(v) for v in found["verdicts"])
    assert {(r["backbone"], r["top_share"], r["top_group"]) for r in found["ranking"]} == {
        ("strong.v", 0.5, True),
        ("twin.v", 0.5, True),
        ("noise.v", 0.0, False),
    }
    with twins.write_csv(tmp_path / "p.csv").open() as file:
        rows = [r for r in csv.DictReader(file) if r["rank"]]
    assert len(rows) == 9 and {r["top_share"] for r in rows} == {"0.5", "0.0"}
    assert {r["top_group"] for r in rows if r["backbone"] == "noise.v"} == {"false"}
    path = twins.plot(tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
