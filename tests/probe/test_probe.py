"""`probe` on real stores: group-aware folds, determinism, the ranking and its tests, scikit-learn parity of
the probes and metrics, the report's files, the few-shot curve and one-line errors."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image
from scipy import stats
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

import embedstore
from embedstore.core.errors import EmbedstoreError
from embedstore.core.ids import encoded_ids, id_bytes, id_strings
from embedstore.core.schema import TILES, TILES_SCHEMA
from embedstore.evaluate import folds as splits
from embedstore.evaluate.metrics import corrected_interval, paired_p_value, split_scores
from embedstore.evaluate.tasks import task_tiles
from embedstore.probe import classifiers
from tests.helpers import add_task, add_vectors, vector_store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROBES = ("knn", "prototype", "linear")
TOY_TILES, TOY_DIM, TOY_SLIDES = 240, 16, 12
TOY_SEPARATION = 0.6  # class centres' scale against unit noise: well above chance, short of perfect
RANKED_FOLDS = 4  # with 3 splits (2 degrees of freedom) the paired test gives p ~ 0.04 to signal vs noise


# -- stores ------------------------------------------------------------------------------------------


@dataclass
class Toy:
    store: embedstore.Store
    vectors: dict[str, np.ndarray]  # row i: tile t{i:06d}
    labels: np.ndarray  # task "toy", row i: tile t{i:06d}


def toy_store(path: Path) -> Toy:
    """240 tiles on 12 slides (`vector_store`), three classes c0..c2 spread over every slide; backbones
    good.v (classes separable, not perfectly), copy.v (the same vectors) and noise.v (no class signal).
    Tasks: toy (every tile), and the unusable one (one class), tiny (class b: 2 tiles), clumped (class b on
    2 slides)."""
    rng = np.random.default_rng(0)
    codes = rng.permutation(np.arange(TOY_TILES) % 3)
    centres = rng.normal(size=(3, TOY_DIM))
    good = (TOY_SEPARATION * centres[codes] + rng.normal(size=(TOY_TILES, TOY_DIM)) + 1.0).astype(np.float32)
    noise = (rng.normal(size=(TOY_TILES, TOY_DIM)) + 1.0).astype(np.float32)
    store = vector_store(path, good, slides=TOY_SLIDES, key="good.v")
    add_vectors(store, "noise.v", noise)
    add_vectors(store, "copy.v", good)
    ids = [f"t{i:06d}" for i in range(TOY_TILES)]
    labels = np.array([f"c{c}" for c in codes])
    add_task(store, "toy", dict(zip(ids, labels, strict=True)))
    add_task(store, "one", {t: "x" for t in ids[:30]})
    add_task(store, "tiny", {**{t: "a" for t in ids[:40]}, ids[40]: "b", ids[41]: "b"})
    add_task(store, "clumped", {t: "b" if i % TOY_SLIDES < 2 else "a" for i, t in enumerate(ids[:60])})
    return Toy(store, {"good.v": good, "copy.v": good, "noise.v": noise}, labels)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Toy:
    return toy_store(tmp_path_factory.mktemp("toy") / "store")


@pytest.fixture(scope="module")
def ranked(toy):
    """Every probe on every backbone, one seed of RANKED_FOLDS folds, no few-shot curve."""
    return toy.store.probe("toy", "all", folds=RANKED_FOLDS, seeds=1, shots=None)


@pytest.fixture(scope="module")
def shot_report(toy):
    return toy.store.probe(
        "toy", "good.v,noise.v", folds=3, seeds=1, shots=(4, 16, 64), shot_draws=2, indicators=True
    )


def score(report, backbone: str, seed: int, fold: int, probe: str, metric: str = "balanced_accuracy"):
    found = report.scores.filter(
        (pl.col("backbone") == backbone)
        & (pl.col("seed") == seed)
        & (pl.col("fold") == fold)
        & (pl.col("probe") == probe)
        & (pl.col("metric") == metric)
    )
    assert found.height == 1
    return found["value"][0]


def toy_folds(toy: Toy, folds: int = 3):
    """Task toy's tiles and seed 0's folds, computed as run.py does; `rows`: each tile's row in toy.*."""
    tiles = task_tiles(toy.store.catalog, "toy", ["good.v"], None)
    rows = np.array([int(t[1:]) for t in tiles.tile_ids])
    assert (np.array(tiles.classes)[tiles.codes] == toy.labels[rows]).all()
    return tiles, rows, splits.group_folds(tiles.codes, tiles.groups, folds, 0)


def test_task_tiles_are_numpy_arrays_sorted_by_tile_id(toy):
    tiles = task_tiles(toy.store.catalog, "toy", ["good.v"], None)
    ids = sorted(f"t{i:06d}" for i in range(TOY_TILES))
    assert tiles.keys.dtype.kind == "S" and tiles.keys.tolist() == [t.encode() for t in ids]
    assert tiles.tile_ids.dtype.kind == "U" and tiles.tile_ids.tolist() == ids
    assert tiles.codes.dtype == np.int64 and tiles.groups.dtype.kind == "U" and len(tiles.groups) == len(ids)


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_id_bytes_copies_arrow_ids_without_python_objects_and_round_trips(kind):
    ids = ["t1", "", "é日本", "t10", "abc", "t2"]
    array = pa.array(ids, kind)
    for arrow, expected in [
        (array, ids),
        (array.slice(2, 3), ids[2:5]),
        (pa.chunked_array([array.slice(0, 2), array.slice(2)]), ids),
        (pa.array(["ab", "cd", "ef"], kind), ["ab", "cd", "ef"]),  # equal widths
        (pa.array([], kind), []),
    ]:
        keys = id_bytes(arrow)
        assert keys.dtype.kind == "S" and keys.tolist() == [t.encode() for t in expected]
        assert id_strings(keys).tolist() == expected and encoded_ids(expected).tolist() == keys.tolist()
    assert [k.decode() for k in np.sort(id_bytes(array)).tolist()] == sorted(ids)  # UTF-8 sorts as str


# Patients -> slides -> tiles, then tiles lacking patient, slide or image, to check the group column.
PATIENTS, SLIDES_PER_PATIENT, TILES_PER_SLIDE = 36, 3, 3


def group_store(path: Path):
    """Part A: 36 patients x 3 slides x 3 tiles (patient, slide, image set); backbone patient.v puts a
    patient's tiles close together (slides slightly apart), and each patient's tiles share one random
    label: a probe beats chance only if a patient is in both train and test. Part B: 24 tiles without a
    patient; C: 12 with an image only; D: 6 with no group column. Tasks by_patient (A), no_patient (A+B),
    images (A+B+C), loose (all)."""
    rng = np.random.default_rng(1)
    store = embedstore.init(path)
    rows, vectors, labels = [], [], []
    centres = rng.normal(size=(PATIENTS, 8))
    patient_class = rng.permutation(np.arange(PATIENTS) % 2)
    for p in range(PATIENTS):
        for s in range(SLIDES_PER_PATIENT):
            offset = 0.1 * rng.normal(size=8)
            for _ in range(TILES_PER_SLIDE):
                rows.append({"patient": f"p{p}", "slide": f"s{p}_{s}", "image": f"i{p}_{s}"})
                vectors.append(centres[p] + offset + 0.02 * rng.normal(size=8))
                labels.append("ab"[patient_class[p]])
    parts = {"A": len(rows)}
    for name, count, groups in (
        ("B", 24, lambda k: {"slide": f"sb{k % 6}", "image": f"ib{k % 6}"}),
        ("C", 12, lambda k: {"image": f"ic{k % 6}"}),
        ("D", 6, lambda k: {}),
    ):
        for k in range(count):
            rows.append(groups(k))
            vectors.append(rng.normal(size=8))
            labels.append("ab"[k % 2])
        parts[name] = len(rows)
    tiles = [
        {"tile_id": f"t{i:06d}", "source_id": r.get("slide", f"src{i}"), "x": 32 * i, "y": 0, "level": 0}
        | {"size0": 32, "width": 32, "height": 32, **r}
        for i, r in enumerate(rows)
    ]
    store.catalog.insert_missing(TILES, pa.Table.from_pylist(tiles, schema=TILES_SCHEMA))
    add_vectors(store, "patient.v", np.array(vectors))
    ids = [t["tile_id"] for t in tiles]
    for task, end in (("by_patient", "A"), ("no_patient", "B"), ("images", "C"), ("loose", "D")):
        add_task(store, task, dict(zip(ids[: parts[end]], labels[: parts[end]], strict=True)))
    return store, rows


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    return group_store(tmp_path_factory.mktemp("groups") / "store")


def knn1(store, task: str, **options):
    """A kNN (k = 1) run: cheap, and the score that exposes a group in both train and test."""
    return store.probe(
        task, "patient.v", probes=("knn",), knn_k=(1,), rank_k=1, folds=3, seeds=1, shots=None, **options
    )


def mean_score(report, probe: str = "knn@1", backbone: str = "patient.v") -> float:
    row = report.summary.filter(
        (pl.col("backbone") == backbone)
        & (pl.col("probe") == probe)
        & (pl.col("metric") == "balanced_accuracy")
    )
    return float(row["mean"][0])


# -- groups never straddle train and test ------------------------------------------------------------


def uneven_task(seed: int):
    """3 classes over 40 groups of very different sizes (1 to ~60 tiles), classes skewed per group."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(0.08, size=40), 60)
    groups = np.repeat(np.arange(40), sizes).astype(str)
    bias = rng.integers(0, 3, size=40)
    labels = np.where(rng.random(len(groups)) < 0.6, np.repeat(bias, sizes), rng.integers(0, 3, len(groups)))
    return labels, groups


@pytest.mark.parametrize("folds", [3, 5])
@pytest.mark.parametrize("data_seed", [0, 1])
def test_group_folds_never_split_a_group(folds, data_seed):
    labels, groups = uneven_task(data_seed)
    everything = np.arange(len(labels))
    tests_by_seed = []
    for seed in range(4):
        found = splits.group_folds(labels, groups, folds, seed)
        assert [s.fold for s in found] == list(range(folds)) and {s.seed for s in found} == {seed}
        for split in found:
            assert not set(groups[split.train]) & set(groups[split.test])
            assert np.array_equal(np.sort(np.concatenate([split.train, split.test])), everything)
            assert set(labels[split.test]) == set(labels)  # stratified: every class in every test fold
            for fit, held_out in splits.inner_folds(labels[split.train], groups[split.train], 3, seed):
                inner_groups = groups[split.train]
                assert not set(inner_groups[fit]) & set(inner_groups[held_out])
        assert np.array_equal(np.sort(np.concatenate([s.test for s in found])), everything)  # a partition
        again = splits.group_folds(labels, groups, folds, seed)
        assert all(np.array_equal(a.test, b.test) for a, b in zip(found, again, strict=True))
        tests_by_seed.append([tuple(s.test) for s in found])
    assert len({tuple(t) for t in tests_by_seed}) > 1  # each seed shuffles anew


def test_store_folds_use_the_patient_column_and_keep_patients_apart(grouped):
    store, rows = grouped
    tiles = task_tiles(store.catalog, "by_patient", ["patient.v"], None)
    assert tiles.group_by == "patient"
    patients = np.array([rows[int(t[1:])]["patient"] for t in tiles.tile_ids])  # from the test's own rows
    assert np.array_equal(tiles.groups, patients)
    for seed in range(2):
        for split in splits.group_folds(tiles.codes, tiles.groups, 3, seed):
            assert not set(patients[split.train]) & set(patients[split.test])

    # End to end: a patient's tiles are each other's nearest neighbours and share its label, so kNN (k=1)
    # is at chance (0.5) unless a patient lands in both train and test. Grouped by slide, a patient's
    # other slides leak into training; per tile, everything leaks.
    by_patient = knn1(store, "by_patient")
    assert (by_patient.group_by, by_patient.groups) == ("patient", PATIENTS)
    assert mean_score(by_patient) < 0.65  # 0.42 here
    by_slide = knn1(store, "by_patient", group_by="slide")
    assert (by_slide.group_by, by_slide.groups) == ("slide", PATIENTS * SLIDES_PER_PATIENT)
    assert mean_score(by_slide) > 0.75  # 0.82 here (sometimes all of a patient's slides are in the test fold)
    assert mean_score(knn1(store, "by_patient", group_by="tile")) > 0.95


@pytest.mark.parametrize(
    ("task", "column", "groups"),
    [
        ("by_patient", "patient", PATIENTS),
        ("no_patient", "slide", PATIENTS * SLIDES_PER_PATIENT + 6),  # B's tiles lack a patient
        ("images", "image", PATIENTS * SLIDES_PER_PATIENT + 6 + 6),  # C's tiles lack a slide too
        ("loose", "tile", PATIENTS * SLIDES_PER_PATIENT * TILES_PER_SLIDE + 24 + 12 + 6),
    ],
)
def test_default_group_is_the_first_of_patient_slide_image_set_for_every_tile(grouped, task, column, groups):
    report = knn1(grouped[0], task)
    assert (report.group_by, report.groups) == (column, groups)
    assert any("each tile is its own group" in note for note in report.notes) == (column == "tile")


def test_group_by_an_explicit_column(grouped):
    store = grouped[0]
    report = knn1(store, "no_patient", group_by="image")
    assert (report.group_by, report.groups) == ("image", PATIENTS * SLIDES_PER_PATIENT + 6)
    with pytest.raises(EmbedstoreError, match="--group-by patient: 24 of the task's tiles have no patient"):
        knn1(store, "no_patient", group_by="patient")


# -- determinism -------------------------------------------------------------------------------------


def test_same_seed_gives_identical_results_and_more_seeds_change_them(toy, ranked):
    again = toy.store.probe("toy", "all", folds=RANKED_FOLDS, seeds=1, shots=None)
    assert again.scores.height == 3 * RANKED_FOLDS * (5 + 2) * (3 + 3)  # keys x folds x probes x metrics
    assert again.scores.equals(ranked.scores)
    assert again.summary.equals(ranked.summary) and again.ranking.equals(ranked.ranking)

    keys, probes = ["good.v", "noise.v"], ("knn", "prototype")
    two = toy.store.probe("toy", ",".join(keys), folds=RANKED_FOLDS, seeds=2, shots=None, probes=probes)
    order = ["backbone", "seed", "fold", "probe", "metric"]
    seed0 = two.scores.filter(pl.col("seed") == 0).sort(order)
    same = ranked.scores.filter(pl.col("backbone").is_in(keys) & (pl.col("probe") != "linear")).sort(order)
    assert seed0.equals(same)  # seed 0's folds do not depend on how many seeds follow
    seed1 = two.scores.filter(pl.col("seed") == 1).sort(order)
    assert not np.array_equal(seed0["value"].to_numpy(), seed1["value"].to_numpy())  # reshuffled folds
    assert set(two.summary["splits"]) == {2 * RANKED_FOLDS}
    both = ranked.summary.join(two.summary, on=["backbone", "probe", "metric"], suffix="_two")
    assert both.height == two.summary.height and (both["mean"] != both["mean_two"]).any()


# -- the ranking -------------------------------------------------------------------------------------


def test_separable_backbone_ranks_above_noise_and_copies_cannot_be_told_apart(ranked):
    assert ranked.ranking["probe"].unique(maintain_order=True).to_list() == list(PROBES)
    for probe in PROBES:
        rows = {r["backbone"]: r for r in ranked.ranking.filter(pl.col("probe") == probe).to_dicts()}
        good, copy, noise = rows["good.v"], rows["copy.v"], rows["noise.v"]
        best, second = sorted([good, copy], key=lambda r: r["rank"])
        assert (best["rank"], second["rank"], noise["rank"]) == (1, 2, 3), probe
        assert 0.6 < good["mean"] < 1.0 and noise["mean"] < 0.5, probe  # chance: 1/3
        assert noise["ci_low"] < noise["mean"] < noise["ci_high"] < good["ci_low"] < good["mean"], probe
        assert second["mean"] == best["mean"] and second["p_vs_best"] == 1.0 and second["tied_with_best"]
        assert best["p_vs_best"] == 1.0
        assert noise["p_vs_best"] < 0.05 and not noise["tied_with_best"], probe
    assert ranked.best("linear") in {"good.v", "copy.v"}


# -- the probes against scikit-learn -----------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_equals_scikit_learn_on_the_same_folds(toy, ranked, k):
    tiles, rows, folds = toy_folds(toy, folds=RANKED_FOLDS)
    y = tiles.codes
    for key in ("good.v", "noise.v"):
        x = toy.vectors[key][rows]
        for split in folds:
            reference = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(
                x[split.train], y[split.train]
            )
            expected = reference.predict_proba(x[split.test])
            found = classifiers.knn_probabilities(x[split.train], y[split.train], x[split.test], [k], 3)[k]
            np.testing.assert_allclose(found, expected, atol=1e-6)
            accuracy = balanced_accuracy_score(y[split.test], reference.predict(x[split.test]))
            assert score(ranked, key, 0, split.fold, f"knn@{k}") == pytest.approx(accuracy, abs=1e-12)


def scikit_linear(x: np.ndarray, y: np.ndarray, inner):
    """The reference the linear probe follows, on one BLAS thread (L-BFGS-B's small products)."""
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=classifiers.C_GRID,
            cv=inner,
            scoring="neg_log_loss",
            class_weight="balanced",
            max_iter=1000,
            l1_ratios=(0.0,),
            use_legacy_attributes=False,
        ),
    )
    with threadpool_limits(1, user_api="blas"):
        return model.fit(x, y)


def synthetic_task(classes: int, n: int = 150, dim: int = 8, separation: float = 0.4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    x = separation * rng.normal(size=(classes, dim))[y] + rng.normal(size=(n, dim)) + 2.0
    return x.astype(np.float32), y, rng.integers(0, 15, n).astype(str)


# Both fits minimise the same strictly convex objective (standardised features, balanced class weights,
# scikit-learn's L2 scaling) with L-BFGS-B to a largest-gradient entry of 1e-4: they can only differ by
# where each solver stops. That moves a probability by ~1e-5 here; 1e-3 leaves room for other BLAS and
# platforms and is still far below what could change a prediction, and so a score, by 0.005.
PROBABILITY_TOLERANCE = 1e-3


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_probe_agrees_with_scikit_learn(classes):
    x, y, groups = synthetic_task(classes)
    chosen = []
    for split in splits.group_folds(y, groups, 3, 0):
        train, test = x[split.train], x[split.test]
        inner = splits.inner_folds(y[split.train], groups[split.train], 3, 1000 * split.seed + split.fold)
        fit = classifiers.linear_probabilities(train, y[split.train], test, classes, inner)
        reference = scikit_linear(train, y[split.train], inner)
        assert fit.c == reference[-1].C_
        expected = reference.predict_proba(test)
        np.testing.assert_allclose(fit.probabilities, expected, atol=PROBABILITY_TOLERANCE)
        ours = split_scores(y[split.test], fit.probabilities, classes)["balanced_accuracy"]
        assert ours == pytest.approx(balanced_accuracy_score(y[split.test], expected.argmax(1)), abs=0.005)
        chosen.append(fit.c)
    assert any(min(classifiers.C_GRID) < c < max(classifiers.C_GRID) for c in chosen)  # a real choice


def test_reported_linear_scores_agree_with_scikit_learn(toy, ranked):
    tiles, rows, folds = toy_folds(toy, folds=RANKED_FOLDS)
    x, y = toy.vectors["good.v"][rows], tiles.codes
    for split in folds:
        inner = splits.inner_folds(
            y[split.train], tiles.groups[split.train], 3, 1000 * split.seed + split.fold
        )
        reference = scikit_linear(x[split.train], y[split.train], inner)
        expected = balanced_accuracy_score(y[split.test], reference.predict(x[split.test]))
        assert score(ranked, "good.v", 0, split.fold, "linear") == pytest.approx(expected, abs=0.005)


# -- metrics -----------------------------------------------------------------------------------------


def tied_probabilities(classes: int, n: int = 300, seed: int = 0):
    """Labels and probabilities from a few coarse rows: many tied scores, and tied top classes."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % classes)
    if classes == 2:
        positive = np.where(y == 1, rng.choice([0.5, 0.6, 0.8, 0.3], n), rng.choice([0.2, 0.5, 0.4, 0.6], n))
        return y, np.stack([1 - positive, positive], axis=1)
    rows = np.array(
        [[0.5, 0.3, 0.2], [0.3, 0.5, 0.2], [0.2, 0.2, 0.6], [0.4, 0.4, 0.2], [1 / 3, 1 / 3, 1 / 3]]
    )
    pick = np.where(rng.random(n) < 0.5, y, rng.integers(0, 5, n))  # rows 0..2 favour class 0..2 a little
    return y, rows[pick]


@pytest.mark.parametrize("classes", [2, 3])
def test_split_scores_equal_scikit_learn_with_ties(classes):
    y, probabilities = tied_probabilities(classes)
    predicted = probabilities.argmax(axis=1)  # the lowest class on ties, as split_scores documents
    assert (probabilities.max(axis=1, keepdims=True) == probabilities).sum(axis=1).max() > 1  # ties exist
    found = split_scores(y, probabilities, classes)
    assert found["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted), abs=1e-12)
    assert found["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"), abs=1e-12)
    per_class = f1_score(y, predicted, average=None, labels=range(classes))
    assert [found[f"f1:{c}"] for c in range(classes)] == pytest.approx(per_class, abs=1e-12)
    if classes == 2:
        expected = roc_auc_score(y, probabilities[:, 1])
    else:
        expected = roc_auc_score(y, probabilities, multi_class="ovr", average="macro")
    assert found["auroc"] == pytest.approx(expected, abs=1e-12)


def test_split_scores_with_a_class_missing_from_the_test_set():
    y, probabilities = tied_probabilities(3, seed=1)
    present = y != 2
    y, probabilities = y[present], probabilities[present]
    predicted = probabilities.argmax(axis=1)
    assert (predicted == 2).any()  # predicted, though never true
    found = split_scores(y, probabilities, 3)
    with pytest.warns(UserWarning):
        assert found["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted), abs=1e-12)
    per_class = f1_score(y, predicted, average=None, labels=[0, 1, 2], zero_division=0)
    assert [found[f"f1:{c}"] for c in range(3)] == pytest.approx(per_class, abs=1e-12)
    aurocs = [roc_auc_score(y == c, probabilities[:, c]) for c in (0, 1)]  # classes present only
    assert found["auroc"] == pytest.approx(np.mean(aurocs), abs=1e-12)


def test_paired_p_value():
    rng = np.random.default_rng(0)
    a = 0.8 + 0.02 * rng.normal(size=15)
    assert paired_p_value(a, a.copy(), 0.25) == 1.0
    consistent = a - 0.05 + 0.005 * rng.normal(size=15)
    assert paired_p_value(a, consistent, 0.25) < 1e-3
    assert paired_p_value(a, a + 0.02 * rng.normal(size=15), 0.25) > 0.05  # differences of mean ~0
    b = a - 0.01 + 0.02 * rng.normal(size=15)
    # Without the correction it is the plain paired t-test; the correction can only make p larger.
    assert paired_p_value(a, b, 0.0) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert paired_p_value(a, b, 0.25) > paired_p_value(a, b, 0.0)
    assert math.isnan(paired_p_value(a[:1], b[:1], 0.25))


def test_corrected_interval_is_wider_than_the_naive_t_interval():
    values = 0.7 + 0.03 * np.random.default_rng(0).normal(size=15)
    naive = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    plain = corrected_interval(values, 0.0)
    assert (plain.low, plain.high) == pytest.approx(naive, rel=1e-9)
    corrected = corrected_interval(values, 0.25)  # 5 folds: n_test / n_train = 1 / 4
    assert corrected.mean == pytest.approx(values.mean())
    assert corrected.low < naive[0] and corrected.high > naive[1]
    ratio = (corrected.high - corrected.low) / (naive[1] - naive[0])
    assert ratio == pytest.approx(math.sqrt((1 / 15 + 0.25) / (1 / 15)), rel=1e-9)
    single = corrected_interval(values[:1], 0.25)
    assert single.mean == values[0] and math.isnan(single.low) and math.isnan(single.high)


# -- report files ------------------------------------------------------------------------------------


def test_plot_is_a_png(shot_report, tmp_path):
    path = shot_report.plot(tmp_path / "probe.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert 3 * 250 < width < 4000 and 2 * 250 < height < 3000  # three panels wide, two rows high
        assert image.convert("L").getextrema()[0] < 100  # something dark was drawn on white


def test_json_holds_ranking_summary_and_few_shot(shot_report, tmp_path):
    text = shot_report.write_json(tmp_path / "probe.json").read_text()

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    found = json.loads(text, parse_constant=refuse)  # NaN / Infinity are not JSON
    assert found["task"] == "toy" and found["backbones"] == ["good.v", "noise.v"]
    assert found["classes"] == ["c0", "c1", "c2"] and found["group_by"] == "slide" and found["tiles"] == 240
    assert found["options"]["folds"] == 3 and found["options"]["shots"] == [4, 16, 64]
    assert len(found["ranking"]) == 2 * 3
    assert {r["backbone"] for r in found["ranking"] if r["rank"] == 1} == {"good.v"}
    assert {(r["probe"], r["metric"]) for r in found["summary"]} >= {("knn@20", "auroc"), ("linear", "f1:c2")}
    assert {r["shots"] for r in found["few_shot"]} == {4, 16}
    assert len(found["scores"]) == shot_report.scores.height
    assert set(found["indicators"]) == {"good.v", "noise.v"}


def test_csv_has_the_rank_columns(shot_report, tmp_path):
    with shot_report.write_csv(tmp_path / "probe.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert {"backbone", "probe", "metric", "mean", "ci_low", "ci_high", "rank", "p_vs_best"} <= set(rows[0])
    assert "tied_with_best" in rows[0] and len(rows) == shot_report.summary.height
    ranked_rows = {(r["probe"], r["backbone"]): r for r in rows if r["rank"]}
    assert set(ranked_rows) == {
        (p, b) for p in ("knn@20", "prototype", "linear") for b in ("good.v", "noise.v")
    }
    assert all(r["metric"] == "balanced_accuracy" for r in ranked_rows.values())
    assert all(ranked_rows[(p, "good.v")]["rank"] == "1" for p in ("knn@20", "prototype", "linear"))
    assert all(ranked_rows[(p, "noise.v")]["tied_with_best"] == "false" for p in ("knn@20", "linear"))


# -- few-shot ----------------------------------------------------------------------------------------


def test_few_shot_curve(toy, shot_report, ranked):
    tiles, _, folds = toy_folds(toy)
    largest = [int(np.bincount(tiles.codes[s.train]).max()) for s in folds]
    assert {s for s in (4, 16, 64) if any(s < n for n in largest)} == {4, 16}  # 64: more than any class
    frame = shot_report.few_shot
    assert set(frame["shots"]) == {4, 16} and set(frame["probe"]) == set(PROBES)
    assert set(frame["backbone"]) == {"good.v", "noise.v"} and set(frame["runs"]) == {3 * 2}
    full = {
        r["probe"]: r["mean"] for r in shot_report.ranking.filter(pl.col("backbone") == "good.v").to_dicts()
    }
    for probe in PROBES:
        curve = frame.filter((pl.col("probe") == probe) & (pl.col("backbone") == "good.v")).sort("shots")
        at4, at16 = curve["mean"].to_list()
        assert at4 <= at16 + 0.01 and at16 <= full[probe] + 0.01, probe  # more labels never hurt much
        noise = frame.filter(
            (pl.col("probe") == probe) & (pl.col("backbone") == "noise.v") & (pl.col("shots") == 16)
        )
        assert at16 > noise["mean"][0] + 0.2, probe
    assert ranked.few_shot.height == 0 and ranked.to_dict()["few_shot"] == []  # shots=None skips it


def test_few_shot_draws_come_from_training_tiles():
    labels = np.repeat([0, 1, 2], [50, 20, 3])
    train = np.arange(0, len(labels), 2)
    chosen = splits.few_shot(labels, train, 8, np.random.default_rng(0))
    assert set(chosen) <= set(train)
    assert np.bincount(labels[chosen]).tolist() == [8, 8, 2]  # class 2 has only 2 training tiles


# -- bad input ---------------------------------------------------------------------------------------


BAD_INPUT = [
    ("one", "good.v", {}, ["task 'one' has one class (x)", "at least two"]),
    ("tiny", "good.v", {}, ["class b (2) has fewer tiles than --folds 3", "--folds 2"]),
    ("clumped", "good.v", {}, ["class b lies in 2 slide group(s), fewer than --folds 3", "--group-by"]),
    ("toy", "good.v,resnet18.random", {}, ["no embeddings for 'resnet18.random'", "embedstore embed"]),
    ("nope", "good.v", {}, ["unknown task 'nope'", "tasks in this store: clumped, one, tiny, toy"]),
    ("toy", "good.v,no.such", {}, ["unknown backbone 'no.such'"]),
    ("toy", "resnet18.random@stage9", {}, ["no layer stage9", "stage0 (64)", "stage3 (512)"]),
    ("toy", "good.v", {"knn_k": (1, 5), "rank_k": 20}, ["--rank-k 20 must be one of --knn-k 1,5"]),
    ("toy", "good.v", {"group_by": "colour"}, ["--group-by 'colour' is not a tile column"]),
    ("toy", "good.v", {"group_by": "patient"}, ["240 of the task's tiles have no patient"]),
]


@pytest.mark.parametrize(("task", "backbones", "options", "parts"), BAD_INPUT)
def test_bad_input_is_one_line_error(toy, task, backbones, options, parts):
    with pytest.raises(EmbedstoreError) as raised:
        toy.store.probe(task, backbones, folds=3, seeds=1, shots=None, **options)
    message = str(raised.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_store_without_embeddings(tmp_path):
    store = embedstore.init(tmp_path / "empty")
    with pytest.raises(EmbedstoreError, match="has no embeddings yet; run `embedstore embed"):
        store.probe("toy")


def test_without_task_reports_the_indicators_alone(toy):
    report = toy.store.probe(None, "good.v,noise.v")
    assert report.task is None and report.scores.height == 0 and report.ranking.height == 0
    assert list(report.indicators) == ["good.v", "noise.v"]
    assert all(found["dim"] == TOY_DIM and found["rankme"] > 1 for found in report.indicators.values())
    text = report.format()
    assert "label-free indicators" in text and "knn" not in text
    with pytest.raises(ValueError, match="without a task"):
        report.plot(Path("unused.png"))


def test_defaults_rank_over_two_seeds_and_leave_the_heavier_analyses_to_options(toy):
    report = toy.store.probe("toy", "good.v,noise.v", probes=("prototype",))
    assert report.options.seeds == 2 and set(report.scores["seed"].unique().to_list()) == {0, 1}
    assert report.few_shot.height == 0 and report.indicators == {}
    assert "few-shot" not in report.format() and "label-free indicators" not in report.format()
    assert report.best("prototype") == "good.v"
    fuller = toy.store.probe("toy", "good.v,noise.v", probes=("prototype",), shots=(4,), indicators=True)
    assert fuller.few_shot.height > 0 and set(fuller.indicators) == {"good.v", "noise.v"}
