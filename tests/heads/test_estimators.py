"""LinearHead and MLPHead: they learn, follow scikit-learn's estimator contract, are deterministic under a
seed, check parameters up front, stop early on validation, tune the binary threshold, stream through
begin/step and survive a to_state/from_state round trip through torch.save."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from heads.errors import HeadsError
from heads.estimators import (
    BaseHead,
    EarlyStopping,
    HeadsParameterError,
    LinearHead,
    MLPHead,
    best_f1_threshold,
    f1_at,
)

FAST = {"lr": 0.05, "epochs": 15, "batch_size": 64}  # small data: few steps per epoch, so a larger rate
HEADS = [LinearHead, MLPHead]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/heads/conftest.py


def blobs(
    n: int, dim: int = 12, labels=("normal", "stroma", "tumour"), separation: float = 4.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clouds around well-separated centres; string labels."""
    rng = np.random.default_rng(seed)
    centres = separation * np.random.default_rng(123).normal(size=(len(labels), dim))
    codes = rng.integers(0, len(labels), size=n)
    x = centres[codes] + rng.normal(size=(n, dim))
    return x.astype(np.float32), np.asarray(labels, dtype=object)[codes]


def imbalanced_binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """10% positives ("tumour") overlapping the negatives: the best F1 threshold is not 0.5."""
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.1
    x = rng.normal(size=(n, 8))
    x[positive, :2] += 1.0
    return x.astype(np.float32), np.where(positive, "tumour", "normal")


# -- learning -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS)
def test_learns_a_separable_task(head):
    x, y = blobs(600)
    model = head(**FAST).fit(x[:400], y[:400])
    assert model.score(x[400:], y[400:]) >= 0.98
    assert (
        len(model.history_) == FAST["epochs"]
        and model.history_[-1]["train_loss"] < model.history_[0]["train_loss"]
    )


@pytest.mark.parametrize(
    "params",
    [
        {"augment": "noise:0.1,mixup:0.4,smote:3,dropout:0.1"},
        {"loss": "focal", "focal_gamma": 2.0, "class_weight": {"tumour": 2.0}},
        {"class_weight": None, "norm": "batch", "hidden": (32, 16)},
        {"norm": None, "dropout": 0.0, "augment": "mixup:0.2:within,views"},
    ],
)
def test_learns_with_augmentation_losses_and_architectures(params):
    head = MLPHead if {"norm", "hidden"} & set(params) else LinearHead
    x, y = blobs(600)
    model = head(**{**FAST, **params}).fit(x[:400], y[:400])
    assert model.score(x[400:], y[400:]) >= 0.95


def test_balanced_class_weights_raise_minority_recall():
    x, y = imbalanced_binary(1500, seed=1)
    recall = {}
    for weight in ("balanced", None):
        model = LinearHead(**FAST, class_weight=weight).fit(x, y)
        recall[weight] = (model.predict(x[y == "tumour"]) == "tumour").mean()
    assert recall["balanced"] > recall[None] + 0.2


# -- scikit-learn's contract --------------------------------------------------------------------------


@parametrize_with_checks(
    [LinearHead(lr=0.1, epochs=10, batch_size=64), MLPHead(lr=0.03, epochs=10, batch_size=64, hidden=(8,))]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("head", HEADS)
def test_params_clone_and_fitted_attributes(head):
    model = head(lr=0.01, class_weight={"tumour": 3.0}, augment="noise:0.1", seed=4)
    params = model.get_params()
    assert params["lr"] == 0.01 and params["seed"] == 4 and params["device"] == "auto"
    assert ("hidden" in params) == (head is MLPHead)
    assert model.set_params(epochs=3, batch_size=32) is model and model.epochs == 3
    x, y = blobs(200)
    model.fit(x, y)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "module_")
    assert model.classes_.tolist() == ["normal", "stroma", "tumour"] and model.n_features_in_ == x.shape[1]
    probabilities = model.predict_proba(x[:7])
    assert probabilities.shape == (7, 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    predicted = model.predict(x[:7])
    assert predicted.shape == (7,) and set(predicted) <= set(model.classes_)
    assert 0.0 <= model.score(x, y) <= 1.0 and model.threshold_ == 0.5
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.device_.type == expected


@pytest.mark.parametrize("head", HEADS)
def test_deterministic_under_seed_without_touching_the_global_rng(head):
    x, y = blobs(300)
    params = {**FAST, "epochs": 4, "augment": "noise:0.1,mixup:0.4,smote:2,dropout:0.1"}
    before = torch.random.get_rng_state()
    first = head(**params, seed=7).fit(x, y).predict_proba(x)
    assert torch.equal(torch.random.get_rng_state(), before)
    again = head(**params, seed=7).fit(x, y).predict_proba(x)
    other = head(**params, seed=8).fit(x, y).predict_proba(x)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_init_stores_parameters_without_checking_them():
    model = MLPHead(lr=-1, hidden="wide", norm="group", augment="nois:1", device="tpu")
    assert model.get_params()["lr"] == -1 and model.hidden == "wide" and model.augment == "nois:1"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lr": 0}, "lr must be a number > 0, got 0"),
        ({"lr": "fast"}, "lr must be a number > 0"),
        ({"weight_decay": -1e-3}, "weight_decay must be a number >= 0"),
        ({"epochs": 2.5}, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"class_weight": "even"}, "class_weight must be 'balanced', None or a dict label -> weight > 0"),
        ({"class_weight": {"tumour": -1}}, "class_weight must be"),
        ({"loss": "hinge"}, "loss must be 'ce' or 'focal', got 'hinge'"),
        ({"focal_gamma": -1}, "focal_gamma must be a number >= 0"),
        ({"patience": 0}, "patience must be an integer >= 1 or None"),
        (
            {"early_stopping": "accuracy"},
            "early_stopping must be one of auroc, balanced_accuracy, macro_f1, loss",
        ),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": None}, "seed must be an integer >= 0"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"augment": "nois:0.1"}, "augment='nois:0.1': unknown augmentation 'nois'; valid: noise:SCALE"),
        ({"augment": "smote:0"}, "K must be an integer >= 1"),
        ({"hidden": ()}, "hidden must be a non-empty tuple of integers >= 1"),
        ({"hidden": (64, 0)}, "hidden must be"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1)"),
        ({"norm": "group"}, "norm must be 'layer', 'batch' or None, got 'group'"),
        ({"norm": "batch", "batch_size": 1}, "batch_size must be an integer >= 2 with norm='batch'"),
    ],
)
def test_parameters_are_checked_up_front_with_one_line_errors(params, message):
    x, y = blobs(20)
    for call in ("check_params", "fit", "partial_fit", "begin"):
        model = MLPHead(**params)
        with pytest.raises(HeadsParameterError) as caught:
            if call == "check_params":
                model.check_params()
            elif call == "fit":
                model.fit(x, y)
            elif call == "partial_fit":
                model.partial_fit(x, y, classes=np.unique(y))
            else:
                model.begin(np.unique(y), x.shape[1], {"tumour": 3}, (x, np.zeros(len(x), dtype=np.int64)))
        assert message in str(caught.value) and "\n" not in str(caught.value)
        assert isinstance(caught.value, HeadsError) and isinstance(caught.value, ValueError)
        assert not hasattr(model, "module_")


def test_bad_inputs_are_refused():
    x, y = blobs(50)
    with pytest.raises(HeadsParameterError, match="y has one class"):
        LinearHead().fit(x, np.full(len(x), "tumour"))
    with pytest.raises(HeadsParameterError, match="label 'necrosis' is not one of the head's classes"):
        LinearHead(**FAST).fit(x, y, validation=(x[:5], np.array(["necrosis"] * 5)))
    with pytest.raises(HeadsParameterError, match="early_stopping='auroc' is undefined"):
        LinearHead(**FAST).fit(x, y, validation=(x[:5], np.array(["tumour"] * 5)))
    model = LinearHead(**{**FAST, "epochs": 1}).fit(x, y)
    with pytest.raises(HeadsParameterError, match="X has 3 features, but LinearHead is expecting 12"):
        model.predict(x[:, :3])


# -- validation, early stopping and the threshold -----------------------------------------------------


@pytest.mark.parametrize("metric", ["auroc", "loss"])
def test_early_stopping_keeps_the_best_epochs_weights(metric):
    x, y = blobs(500, separation=0.5)  # overlapping: validation scores peak and wander
    train, valid = slice(0, 300), slice(300, 500)
    model = MLPHead(lr=0.05, epochs=40, batch_size=32, patience=3, early_stopping=metric, hidden=(64,))
    model.fit(x[train], y[train], validation=(x[valid], y[valid]))
    assert model.n_iter_ < 40 and model.best_epoch_ == model.n_iter_ - 3
    scores = [record[f"validation_{metric}"] for record in model.history_]
    best = min(scores) if metric == "loss" else max(scores)
    assert model.validation_["epoch"] == model.best_epoch_ and model.validation_[metric] == best
    codes = np.searchsorted(model.classes_, y[valid])
    again = model.validation_scores(model.predict_proba(x[valid]), codes)  # the restored weights
    assert again[metric] == pytest.approx(best, rel=1e-6)


def test_threshold_tuning_improves_positive_f1_on_an_imbalanced_task():
    x, y = imbalanced_binary(3000, seed=0)
    train, valid, test = slice(0, 1500), slice(1500, 2250), slice(2250, 3000)
    model = LinearHead(**FAST, class_weight=None, early_stopping="loss")
    model.fit(x[train], y[train], validation=(x[valid], y[valid]))
    assert model.classes_.tolist() == ["normal", "tumour"] and model.threshold_ < 0.5
    report = model.validation_
    assert report["positive_class"] == "tumour" and report["threshold"] == model.threshold_
    assert report["f1_at_threshold"] > report["f1_at_0.5"]
    scores, positive = model.predict_proba(x[test])[:, 1], y[test] == "tumour"
    assert f1_at(scores, positive, model.threshold_) > f1_at(scores, positive, 0.5) + 0.05
    assert np.array_equal(model.predict(x[test]) == "tumour", scores >= model.threshold_)


def test_best_f1_threshold_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 2)  # ties
    positive = rng.random(200) < scores * 0.6
    threshold, f1 = best_f1_threshold(scores, positive)
    assert f1 == max(f1_at(scores, positive, t) for t in np.unique(scores))
    assert f1_at(scores, positive, threshold) == f1
    assert best_f1_threshold(scores, np.zeros(200, dtype=bool)) == (0.5, 0.0)


def test_tune_threshold_is_for_binary_heads():
    x, y = blobs(60)
    with pytest.raises(HeadsError, match="tune_threshold is for binary heads"):
        LinearHead(**{**FAST, "epochs": 1}).fit(x, y).tune_threshold(
            np.full((3, 3), 1 / 3), np.array([0, 1, 2])
        )


# -- streaming hooks, partial_fit and state -----------------------------------------------------------


def test_begin_and_step_train_a_head_from_batches():
    x, y = blobs(600, labels=("normal", "tumour"))
    classes = np.array(["normal", "tumour"])
    codes = (y == "tumour").astype(np.int64)
    model = LinearHead(lr=0.05, augment="noise:0.05,smote:3")
    with pytest.raises(HeadsError, match="call begin"):
        model.step(x[:4], codes[:4])
    model.begin(
        classes, x.shape[1], {"normal": 350, "tumour": 250}, augmentation_sample=(x[:200], codes[:200])
    )
    stopper = EarlyStopping("auroc", patience=2)
    for epoch in range(1, 8):
        losses = [model.step(x[i : i + 50], codes[i : i + 50]) for i in range(0, 400, 50)]
        assert all(math.isfinite(loss) for loss in losses)
        scores = model.validation_scores(model.predict_proba(x[400:]), codes[400:])
        if stopper.update(epoch, scores, model):
            break
    model.load_state_dict(stopper.best_state)
    threshold = model.tune_threshold(model.predict_proba(x[400:]), codes[400:])
    assert model.threshold_ == threshold and model.score(x[400:], y[400:]) >= 0.97
    with pytest.raises(HeadsParameterError, match="needs training statistics"):
        LinearHead(augment="noise:0.1").begin(classes, x.shape[1], {"normal": 1, "tumour": 1})


def test_partial_fit_needs_classes_first_then_keeps_learning():
    x, y = blobs(600)
    model = LinearHead(lr=0.05, batch_size=64)
    with pytest.raises(HeadsParameterError, match="classes must list every label"):
        model.partial_fit(x[:100], y[:100])
    model.partial_fit(x[:100], y[:100], classes=["tumour", "normal", "stroma"])
    for _ in range(10):
        model.partial_fit(x[100:400], y[100:400])
    assert model.classes_.tolist() == ["normal", "stroma", "tumour"] and len(model.history_) == 11
    assert model.class_counts_.sum() == 100 + 10 * 300
    assert model.score(x[400:], y[400:]) >= 0.97


@pytest.mark.parametrize("head", HEADS)
def test_state_round_trip_through_torch_save_gives_identical_predictions(head):
    x, y = imbalanced_binary(400, seed=2)
    model = head(**FAST, norm="batch") if head is MLPHead else head(**FAST)
    model.fit(x[:300], y[:300], validation=(x[300:], y[300:]))
    buffer = io.BytesIO()
    torch.save(model.to_state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = BaseHead.from_state(state)
    assert type(restored) is head and restored.get_params() == model.get_params()
    assert restored.threshold_ == model.threshold_ != 0.5
    assert restored.classes_.tolist() == model.classes_.tolist()
    assert restored.validation_ == model.validation_ and restored.history_ == model.history_
    assert np.array_equal(restored.predict_proba(x), model.predict_proba(x))
    assert np.array_equal(restored.predict(x), model.predict(x))
    assert np.array_equal(head.from_state(state).predict_proba(x), model.predict_proba(x))
    codes = (y == "tumour").astype(np.int64)
    assert restored.validation_scores(restored.predict_proba(x), codes) == model.validation_scores(
        model.predict_proba(x), codes
    )
    other = LinearHead if head is MLPHead else MLPHead
    with pytest.raises(HeadsError, match=f"the state holds a {head.__name__}"):
        other.from_state(state)
