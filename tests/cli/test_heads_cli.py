"""`train-head`, `predict` and `heatmap` from the command line: thin over heads, one-line errors (exit 2)."""

from __future__ import annotations

import csv
import json

import pytest

import embedstore
from tests.cli.test_cli import assert_clean_error, run
from tests.heads.test_card_predict import N, labelled_store
from tests.heads.test_train import KEY

FAST = ("--epochs", 6, "--batch-size", 32, "--lr", 0.01, "--no-progress")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with head `h` trained from the command line, and the JSON report it wrote."""
    path = tmp_path_factory.mktemp("heads_cli") / "store"
    labelled_store(path)
    report = path.parent / "train.json"
    result = run(
        "train-head", path, "--backbone", KEY, "--task", "tumour", "--name", "h", "--json", report, *FAST
    )
    assert result.exit_code == 0, result.output
    return path, result, json.loads(report.read_text())


def test_train_head_prints_the_card_and_writes_json(trained):
    _, result, report = trained
    assert "head 'h': linear on" in result.stdout and "task 'tumour'" in result.stdout
    assert report["card"]["name"] == "h" and report["card"]["backbone"] == KEY
    assert report["card"]["validation"]["auroc"] > 0.95  # a separable task
    assert 0 < report["card"]["threshold"] < 1 and report["history"]


def test_predict_is_incremental_and_exports_the_top_tiles(trained, tmp_path):
    path, _, _ = trained
    top = tmp_path / "top.csv"
    first = run("predict", path, "--head", "h", "--export", top, "--top", 7, "--no-progress")
    assert first.exit_code == 0, first.output
    assert f"{N} new prediction(s), {N} in pred__h" in first.stdout
    rows = list(csv.DictReader(top.open()))
    assert len(rows) == 7 and [r["rank"] for r in rows] == [str(i) for i in range(1, 8)]
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    again = run("predict", path, "--head", "h", "--no-progress")
    assert "0 new prediction(s)" in again.stdout
    assert embedstore.open(path).catalog.read("pred__h").num_rows == N


def test_bad_input_is_one_line_with_the_fix(trained, tmp_path):
    path, _, _ = trained
    common = ("--backbone", KEY, "--task", "tumour", *FAST)
    assert_clean_error(run("train-head", path, "--name", "h", *common), "pass --overwrite")
    assert_clean_error(
        run("train-head", path, "--name", "x", "--aug", "nois:1", *common), "valid: noise:SCALE"
    )
    assert_clean_error(
        run("train-head", path, "--name", "x", "--backbone", KEY, "--task", "nope", *FAST), "nope"
    )
    missing = run("train-head", path, "--name", "x", "--backbone", "other.key", "--task", "tumour", *FAST)
    assert_clean_error(missing, "embedstore embed")
    assert_clean_error(run("train-head", path, "--name", "x", "--hidden", "a,b", *common), "--hidden")
    assert_clean_error(run("predict", path, "--head", "nope"), "nope")
    assert_clean_error(
        run("heatmap", path, "--head", "h", "--slide", "nope", "--out", tmp_path / "x.png"), "nope"
    )
    heatmap = ("heatmap", path, "--head", "h", "--slide", "nope", "--out", tmp_path / "x.png")
    assert_clean_error(run(*heatmap, "--style", "dots"), "--style")
    assert_clean_error(run(*heatmap, "--alpha", "2"), "--alpha")


def test_aug_help_says_mixup_mixes_across_classes_by_default():
    result = run("train-head", "--help")
    assert result.exit_code == 0
    words = " ".join(result.output.split())
    assert "mixup mixes partners across classes by default (mixup:0.4 is mixup:0.4:across)" in words
