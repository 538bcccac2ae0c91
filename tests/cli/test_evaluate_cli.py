"""`embedstore evaluate` from the command line: thin over heads.evaluate, a JSON report, one PNG of the
curves and the confusion matrix, one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.cli.test_cli import assert_clean_error, run
from tests.heads.test_evaluate import TRAINED, N, binary  # noqa: F401 (the store with head h)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_evaluate_prints_the_scores_and_writes_json_and_a_plot(binary, tmp_path):  # noqa: F811
    store, _ = binary
    report, plot = tmp_path / "eval.json", tmp_path / "eval.png"
    args = ("--head", "h", "--task", "external", "--bootstrap", 50, "--no-progress")
    result = run("evaluate", store.root, *args, "--json", report, "--plot", plot)
    assert result.exit_code == 0, result.output
    for shown in ("AUROC", "average precision", "balanced accuracy", "F1 (tumour)", "confusion matrix"):
        assert shown in result.stdout
    written = json.loads(report.read_text())
    assert written["tiles"] == N - TRAINED and written["include_training"] is False
    assert set(written["metrics"]) == {"auroc", "average_precision", "balanced_accuracy", "f1"}
    assert sum(map(sum, written["confusion"])) == N - TRAINED
    with Image.open(plot) as image:
        assert image.size[0] > 2 * image.size[1]  # three panels side by side
    everything = run("evaluate", store.root, *args, "--include-training")
    assert everything.exit_code == 0 and f"{N} tiles" in everything.stdout


def test_bad_input_is_one_line_with_the_fix(binary):  # noqa: F811
    store, _ = binary
    path = store.root
    assert_clean_error(run("evaluate", path, "--head", "nope", "--task", "external"), "no head 'nope'")
    assert_clean_error(run("evaluate", path, "--head", "h", "--task", "nope"), "unknown task 'nope'")
    assert_clean_error(
        run("evaluate", path, "--head", "h", "--task", "grades"), "its classes: normal, tumour"
    )
    assert_clean_error(run("evaluate", path, "--head", "h", "--task", "tumour"), "pass --include-training")
