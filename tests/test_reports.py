"""Every verb's result speaks the one report protocol (`embedstore.core.reports.Report`): a non-empty
`summary()`, a JSON-ready `to_dict()`, and `write_json(path)` that writes that very dict."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from embedstore.core.reports import Report
from embedstore.demo import DemoResult, DemoSearch
from embedstore.embed import EmbedReport
from heads.demo_head import DemoHead
from heads.prediction import predict
from heads.training import train
from heads.tuning import tune
from tests.helpers import vector_store, write_tiles

KEY = "synthetic.v"
FAST = {"epochs": 2, "batch_size": 16}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Report]:
    """One real result of every verb, from a tiny store made here (the embed report: its constructor)."""
    folder = tmp_path_factory.mktemp("reports")
    rng = np.random.default_rng(0)
    codes = np.arange(60) % 2
    vectors = (rng.normal(size=(60, 8)) + 3 * codes[:, None]).astype(np.float32)
    store = vector_store(folder / "store", vectors, slides=6, key=KEY)
    labels = folder / "tumour.csv"
    rows = [f"t{i:06d},{'tumour' if c else 'normal'}" for i, c in enumerate(codes)]
    labels.write_text("tile_id,label\n" + "\n".join(rows) + "\n")
    out: dict[str, Report] = {"labels": store.import_labels("tumour", labels)}
    out["ingest"] = store.ingest([write_tiles(folder / "tiles", 4, seed=0)], progress=False)
    out["embed"] = EmbedReport(
        table=f"emb__{KEY}", backbone=KEY, rows_written=4, tiles_embedded=4, rows_present=60, tiles_total=64,
        seconds=0.5, pipeline_seconds=0.4, batch_size=32, threads=1, table_version=2,
    )  # fmt: skip
    out["check"] = store.check()
    out["compact"] = store.compact(older_than="0s")
    out["index"] = store.index(KEY)
    out["search"] = store.search(KEY, tiles=["t000001"], k=5)
    out["probe"] = store.probe("tumour", [KEY], folds=3, seeds=1, shots=None)
    out["train"] = train(store, KEY, "tumour", name="r-head", **FAST)
    out["card"] = out["train"].card
    out["tune"] = tune(store, KEY, "tumour", 1, name="r-tuned", **FAST)
    out["predict"] = predict(store, "r-head")
    out["demo search"] = DemoSearch(
        positives=["t000001", "t000003"], hits=5, true_positives=4, prevalence=0.5,
        review_page=folder / "review.html", index="flat", negatives=["t000000"],
        true_positives_with_negatives=5,
    )  # fmt: skip
    parts = (out["embed"], out["demo search"], out["probe"], folder / "probe.png")
    out["demo"] = DemoResult(store, [("tiles", out["ingest"])], *parts)
    out["demo head"] = DemoHead(out["train"], out["predict"], None, None, None)
    return out


NAMES = [
    "labels", "ingest", "embed", "check", "compact", "index", "search", "probe", "train", "card", "tune",
    "predict", "demo search", "demo", "demo head",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_every_verbs_result_is_a_report(results, name, tmp_path: Path):
    report = results[name]
    assert isinstance(report, Report)
    summary = report.summary()
    assert isinstance(summary, str) and summary.strip()
    data = report.to_dict()
    assert isinstance(data, dict) and data
    text = json.dumps(data)  # plain JSON values only
    written = report.write_json(tmp_path / "x.json")
    assert written == tmp_path / "x.json"
    assert json.loads(written.read_text()) == json.loads(text)


def test_the_probe_summary_is_still_its_frame(results):
    probe = results["probe"]
    assert probe.summary.height > 0 and "ci_low" in probe.summary.columns
    assert probe.summary() == probe.format()
    for again in (copy.deepcopy(probe), pickle.loads(pickle.dumps(probe))):
        assert again.summary.equals(probe.summary) and again.summary() == probe.format()
