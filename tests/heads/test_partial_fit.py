"""partial_fit, the one public incremental API: a call is one epoch of fit, calls after fit keep learning,
chunks add their class counts, bad chunks are refused; the old begin/step hooks still work but warn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heads.estimators import HeadsParameterError, LinearHead, MLPHead
from tests.heads.test_estimators import blobs

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/heads/conftest.py

PARAMS = {"lr": 0.05, "batch_size": 64, "augment": "noise:0.1,mixup:0.2", "seed": 3}


@pytest.mark.parametrize("head", [LinearHead, MLPHead])
def test_each_partial_fit_call_is_one_epoch_of_fit(head):
    x, y = blobs(400)
    fitted = head(**PARAMS, epochs=3).fit(x, y)
    incremental = head(**PARAMS)
    for _ in range(3):
        incremental.partial_fit(x, y, classes=["normal", "stroma", "tumour"])
    assert np.array_equal(incremental.predict_proba(x), fitted.predict_proba(x))
    assert incremental.history_ == fitted.history_ and incremental.n_iter_ == fitted.n_iter_ == 3
    assert all(math.isfinite(record["train_loss"]) for record in incremental.history_)


def test_partial_fit_after_fit_keeps_the_weights_and_adds_counts():
    x, y = blobs(600, seed=1)
    model = LinearHead(**PARAMS, epochs=1).fit(x[:300], y[:300])
    before = model.score(x[400:], y[400:])
    counts = model.class_counts_.copy()
    for _ in range(5):
        model.partial_fit(x[300:400], y[300:400])
    assert model.n_iter_ == 6 and [r["epoch"] for r in model.history_] == [1, 2, 3, 4, 5, 6]
    assert model.class_counts_.sum() == counts.sum() + 5 * 100
    assert model.score(x[400:], y[400:]) >= max(before, 0.97)


def test_chunks_learn_what_the_whole_set_teaches():
    x, y = blobs(900, seed=2)
    model = LinearHead(**PARAMS)
    classes = np.unique(y)
    for _ in range(4):
        for start in range(0, 600, 150):
            model.partial_fit(x[start : start + 150], y[start : start + 150], classes=classes)
    assert model.n_iter_ == 16 and model.class_counts_.sum() == 4 * 600
    assert model.score(x[600:], y[600:]) >= 0.97


def test_partial_fit_refuses_chunks_that_do_not_match_the_first():
    x, y = blobs(200)
    model = LinearHead(**PARAMS).partial_fit(x, y, classes=["normal", "stroma", "tumour"])
    with pytest.raises(HeadsParameterError, match="differ from those of the first call"):
        model.partial_fit(x, y, classes=["normal", "tumour"])
    with pytest.raises(HeadsParameterError, match="expecting 12 features"):
        model.partial_fit(x[:, :5], y)
    with pytest.raises(HeadsParameterError, match="'necrosis' is not one of the head's classes"):
        model.partial_fit(x[:3], np.array(["normal", "necrosis", "tumour"]))
    with pytest.raises(HeadsParameterError, match="at least 2 labels"):
        LinearHead().partial_fit(x, y, classes=["normal"])


def test_begin_and_step_still_work_but_warn():
    x, y = blobs(300, labels=("normal", "tumour"))
    codes = (y == "tumour").astype(np.int64)
    model = LinearHead(lr=0.05)
    with pytest.warns(DeprecationWarning, match="partial_fit"):
        model.begin(["normal", "tumour"], x.shape[1], {"normal": 150, "tumour": 150})
    with pytest.warns(DeprecationWarning, match="partial_fit"):
        losses = [model.step(x[i : i + 50], codes[i : i + 50]) for i in range(0, 300, 50)]
    assert all(math.isfinite(loss) for loss in losses) and model.score(x, y) >= 0.97
