"""Tuning heads on a real store: n trials on one group-aware split, the strong baseline first, the best
saved (with the tuning table) and loadable, reproducible draws, and the one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from heads.augment import parse_augmentations
from heads.card import list_heads, load_head
from heads.errors import HeadsError
from heads.tuning import DEFAULT_SPACE, baseline_config, draw_configs, tune
from tests.heads.test_train import KEY, SLIDES, add_task
from tests.helpers import vector_store

N, DIM = 300, 16
FAST = {"epochs": 4, "batch_size": 32, "patience": 2}
SMALL = {"hidden": [8, 16]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def overlapping(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, codes): a scarce class (20 %) that overlaps the other, so configurations differ."""
    rng = np.random.default_rng(seed)
    codes = (rng.random(n) < 0.2).astype(int)
    shift = np.zeros(DIM)
    shift[:4] = 1.2
    return (rng.normal(size=(n, DIM)) + codes[:, None] * shift + 2.0).astype(np.float32), codes


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    vectors, codes = overlapping(N)
    store = vector_store(tmp_path_factory.mktemp("tune") / "store", vectors, slides=SLIDES, key=KEY)
    ids = [f"t{i:06d}" for i in range(N)]
    add_task(store, "scarce", {t: "positive" if c else "negative" for t, c in zip(ids, codes, strict=True)})
    add_task(store, "three", {t: "abc"[i % 3] for i, t in enumerate(ids)})
    return store


@pytest.fixture(scope="module")
def tuned(store):
    return tune(store, KEY, "scarce", 4, head="mlp", name="scarce-tuned", space=SMALL, seed=0, **FAST)


def test_n_trials_on_one_split_the_baseline_first_and_the_best_never_worse(tuned):
    result = tuned
    assert [t["trial"] for t in result.trials] == [0, 1, 2, 3]
    base = result.trials[0]
    assert base["baseline"] and not any(t["baseline"] for t in result.trials[1:])
    assert base["augment"] == "" and base["class_handling"] == "balanced"
    assert base["lr"] == 1e-3 and base["weight_decay"] == 1e-4 and base["hidden"] == [256]
    assert result.metric == "f1_at_threshold"
    scores = [t["score"] for t in result.trials]
    assert scores == [t["f1_at_threshold"] for t in result.trials]
    assert result.best_trial == int(np.argmax(scores)) and max(scores) >= base["score"]
    assert all(t["seconds"] > 0 and 1 <= t["epochs"] <= FAST["epochs"] for t in result.trials)
    assert all(0 < t["threshold"] < 1 and 0 <= t["auroc"] <= 1 for t in result.trials)
    split = result.split
    assert result.card.tiles_validation == len(split.validation_ids) and split.group_by == "slide"
    slide = {t: int(t[1:]) % SLIDES for t in split.codes}
    assert not {slide[t] for t in split.train_ids} & {slide[t] for t in split.validation_ids}
    table = result.table
    assert table.height == 4 and {"trial", "lr", "augment", "score", "auroc", "seconds"} <= set(table.columns)
    text = result.format()
    assert len(text.splitlines()) == 6 and f"*{result.best_trial}" in text and "f1_at_threshold" in text


def test_best_is_saved_with_the_tuning_table_and_loads(store, tuned, tmp_path):
    result = tuned
    card, estimator = load_head(store, "scarce-tuned", backbone=KEY)
    assert card.name == "scarce-tuned" and card.threshold == result.best.threshold
    assert any(note.startswith("tuned: best of 4") for note in card.notes)
    saved = json.loads((result.path / "card.json").read_text())
    assert saved["tuning"]["best_trial"] == result.best_trial and len(saved["tuning"]["trials"]) == 4
    x = np.random.default_rng(1).normal(size=(20, DIM)).astype(np.float32) + 2
    assert np.array_equal(estimator.predict_proba(x), result.best.estimator.predict_proba(x))
    assert [c.name for c in list_heads(store)].count("scarce-tuned") == 1
    assert not [c for c in list_heads(store) if ".tuning-" in c.name]  # the trials were removed
    assert not list(result.path.parent.glob("*.tuning-*"))
    written = json.loads(result.write_json(tmp_path / "tuning.json").read_text())
    assert written["n"] == 4 and written["metric"] == "f1_at_threshold" and len(written["trials"]) == 4
    assert written["best_score"] >= written["baseline_score"]


def test_same_seed_same_trials_other_seed_other_draws(store, tuned):
    again = tune(store, KEY, "scarce", 4, head="mlp", name="again", space=SMALL, seed=0, **FAST)
    strip = [{k: v for k, v in t.items() if k != "seconds"} for t in tuned.trials]
    assert [{k: v for k, v in t.items() if k != "seconds"} for t in again.trials] == strip
    space = {**DEFAULT_SPACE, **{"hidden": [(8,), (16,)]}}
    assert draw_configs(6, space, "mlp", 1) != draw_configs(6, space, "mlp", 0)
    assert draw_configs(6, space, "mlp", 1) == draw_configs(6, space, "mlp", 1)


def test_multiclass_selects_on_macro_f1_and_a_linear_head_has_no_mlp_keys(store):
    result = tune(store, KEY, "three", 2, head="linear", name="three-linear", seed=0, **FAST)
    assert result.metric == "macro_f1" and result.card.kind == "linear"
    assert all(t["score"] == t["macro_f1"] for t in result.trials)
    assert not {"hidden", "dropout", "threshold"} & set(result.trials[0])


def test_fixed_parameters_are_not_searched(store):
    result = tune(store, KEY, "scarce", 3, head="linear", name="fixed", augment="noise:0.1", lr=0.01, **FAST)
    assert {t["augment"] for t in result.trials} == {"noise:0.1"} and result.card.augment == "noise:0.1"
    assert "lr" not in result.space and result.card.params["lr"] == 0.01
    assert "lr" not in result.trials[0] and "weight_decay" in result.trials[0]


def test_draws_cover_the_space_and_stay_in_it():
    space = {
        **DEFAULT_SPACE,
        "hidden": [(64,), (128,)],
        "class_handling": ["balanced", "focal", "none"],
    }
    configs = draw_configs(200, space, "mlp", 3, views=True)
    assert configs[0] == baseline_config(space)
    drawn = configs[1:]
    assert all(1e-4 <= c["lr"] <= 1e-2 and 1e-6 <= c["weight_decay"] <= 1e-1 for c in drawn)
    assert {c["hidden"] for c in drawn} == {(64,), (128,)}
    assert {c["class_handling"] for c in drawn} == {"balanced", "focal", "none"}
    kinds = [tuple(p.split(":")[0] for p in c["augment"].split(",")) if c["augment"] else () for c in drawn]
    assert {len(k) for k in kinds} == {0, 1, 2}
    assert {k for kind in kinds for k in kind} == {"noise", "dropout", "mixup", "smote", "views"}
    order = ["smote", "views", "noise", "dropout", "mixup"]
    assert all(list(k) == sorted(k, key=order.index) for k in kinds)  # SMOTE first, as it runs
    assert all(parse_augmentations(c["augment"]).spec == c["augment"] for c in drawn)
    without = draw_configs(100, space, "mlp", 3, views=False)
    assert not any("views" in c["augment"] for c in without)


@pytest.mark.parametrize(
    ("n", "options", "parts"),
    [
        (0, {}, ["--tune 0", ">= 1"]),
        ("3", {}, ["--tune '3'", "integer"]),
        (3, {"space": {"depth": [2]}}, ["no key 'depth'", "lr, weight_decay"]),
        (3, {"head": "linear", "space": {"hidden": [8]}}, ["hidden", "mlp heads only"]),
        (3, {"space": {"lr": (0.1, 0.01)}}, ["lr=(0.1, 0.01)", "low <= high"]),
        (3, {"space": {"augment": ["blur:3"]}}, ["unknown augmentation 'blur'", "noise"]),
        (3, {"space": {"class_handling": ["oversample"]}}, ["class_handling", "'focal'"]),
        (3, {"space": {"lr": [0.01]}, "lr": 0.1}, ["lr is both searched", "one place"]),
        (3, {"depth": 2}, ["no parameter depth", "weight_decay"]),
        (3, {"head": "forest"}, ["'forest'", "linear, mlp"]),
        (3, {"name": "scarce-tuned"}, ["exists", "--overwrite"]),
    ],
)
def test_bad_input_is_a_one_line_heads_error(store, tuned, n, options, parts):
    with pytest.raises(HeadsError) as error:
        tune(store, KEY, "scarce", n, **options)
    message = str(error.value)
    assert "\n" not in message and all(p in message for p in parts), message
