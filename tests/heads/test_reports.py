"""Every heads verb's result speaks the one report protocol: summary(), to_dict(), write_json(path)."""

from __future__ import annotations

import json

import pytest

from embedstore.core.reports import Report
from heads.prediction import predict
from heads.tuning import tune
from tests.heads.test_train import FAST, KEY, toy  # noqa: F401 (the fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_tune_and_predict_results_are_reports(toy, tmp_path):  # noqa: F811
    store = toy[0]
    tuned = tune(store, KEY, "tumour", 1, name="r-tuned", **FAST)
    trained = tuned.best
    predicted = predict(store, "r-tuned")
    for result, key in ((trained, "card"), (tuned, "trials"), (predicted, "new_rows")):
        assert isinstance(result, Report)
        assert isinstance(result.summary(), str) and result.summary()
        written = json.loads(result.write_json(tmp_path / f"{key}.json").read_text())
        assert key in written and written == json.loads(json.dumps(result.to_dict(), default=str))
    assert tuned.card.kind == "linear"  # one default head for train and tune
    assert predicted.to_dict()["total_rows"] == predicted.total_rows > 0
