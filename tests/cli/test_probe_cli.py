"""`embedstore probe` from the command line: the ranking and its files, the indicators alone, errors."""

from __future__ import annotations

import csv
import json
import re

import pytest

from tests.cli.test_cli import assert_clean_error, run
from tests.probe.test_probe import PNG_MAGIC, toy_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """The probe tests' toy store (read only here): good.v separates task toy's classes, noise.v does not."""
    path = tmp_path_factory.mktemp("probe_cli") / "store"
    toy_store(path)
    return path


def test_probe_prints_the_ranking_and_writes_json_csv_png(store_path, tmp_path):
    files = {"json": tmp_path / "p.json", "csv": tmp_path / "p.csv", "plot": tmp_path / "p.png"}
    result = run(
        "probe", store_path, "--task", "toy", "--backbones", "good.v,noise.v", "--folds", 3, "--seeds", 1,
        "--shots", 4, "--indicators", "--no-progress",
        *[a for name, path in files.items() for a in (f"--{name}", path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "task toy: 240 tiles in 12 slide groups, classes c0, c1, c2; 3 folds x 1 seed;" in out
    for header in ("knn (k=20)", "prototype", "linear"):
        assert f"\n{header}\n" in out
    assert len(re.findall(r"^\s+1\s+good\.v\s+0\.\d{3} \[", out, flags=re.M)) == 3  # first under each probe
    assert len(re.findall(r"^\s+2\s+noise\.v\s+0\.\d{3} \[.*p=0\.0\d\d\s*$", out, flags=re.M)) == 3
    assert "few-shot" in out and "label-free indicators" in out
    assert out.count("good.v is best, clearly (every other p < 0.05; picked in 100 % of resamples)") == 3
    assert all(f"wrote {path}" in result.stderr for path in files.values())

    report = json.loads(files["json"].read_text())
    assert report["options"]["folds"] == 3 and report["options"]["shots"] == [4]
    assert {r["backbone"] for r in report["ranking"] if r["rank"] == 1} == {"good.v"}
    assert {r["shots"] for r in report["few_shot"]} == {4}
    assert [v["decided"] for v in report["verdicts"]] == [True] * 3
    with files["csv"].open() as file:
        header = next(csv.reader(file))
    wanted = {"backbone", "probe", "metric", "mean", "rank", "p_vs_best", "tied_with_best", "top_share"}
    assert wanted <= set(header)
    assert files["plot"].read_bytes()[:8] == PNG_MAGIC


def test_probe_without_task_prints_the_indicators_alone(store_path, tmp_path):
    result = run("probe", store_path, "--backbones", "good.v,noise.v", "--json", tmp_path / "i.json")
    assert result.exit_code == 0, result.output
    assert "label-free indicators" in result.stdout and "RankMe" in result.stdout
    assert re.search(r"^\s+good\.v\s+16\s", result.stdout, flags=re.M)
    assert re.search(r"^\s+noise\.v\s+16\s", result.stdout, flags=re.M)
    assert "knn" not in result.stdout and "task " not in result.stdout
    report = json.loads((tmp_path / "i.json").read_text())
    assert (
        report["task"] is None
        and report["ranking"] == []
        and set(report["indicators"])
        == {
            "good.v",
            "noise.v",
        }
    )


def test_plot_without_task_is_refused(store_path, tmp_path):
    result = run("probe", store_path, "--backbones", "good.v", "--plot", tmp_path / "p.png")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: --plot needs --task")
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "one"], "task 'one' has one class (x); a probe needs at least two"),
        (["--task", "tiny"], "class b (2) has fewer tiles than --folds 3; label more tiles or use --folds 2"),
        (["--task", "clumped"], "class b lies in 2 slide group(s), fewer than --folds 3"),
        (["--task", "toy", "--backbones", "good.v,resnet18.random"], "no embeddings for 'resnet18.random'"),
        (["--task", "nope"], "unknown task 'nope'; tasks in this store: clumped, one, tiny, toy"),
        (["--task", "toy", "--backbones", "no.such"], "unknown backbone 'no.such'"),
        (["--task", "toy", "--backbones", "resnet18.random@stage9"], "'resnet18.random' has no layer stage9"),
        (["--task", "toy", "--knn-k", "1,5", "--rank-k", "7"], "--rank-k 7 must be one of --knn-k 1,5"),
        (["--task", "toy", "--knn-k", "1,5"], "--rank-k 20 must be one of --knn-k 1,5"),  # the default k
        (["--task", "toy", "--group-by", "colour"], "--group-by 'colour' is not a tile column"),
    ],
)
def test_probe_errors_are_one_line_exit_2(store_path, tmp_path, args, message):
    if "--backbones" not in args:
        args = [*args, "--backbones", "good.v"]
    result = run(
        "probe", store_path, *args, "--folds", 3, "--seeds", 1, "--shots", "none", "--json", tmp_path / "x"
    )
    assert_clean_error(result, message)
    assert result.output.startswith("error: ")
    assert not (tmp_path / "x").exists()


def test_no_embeddings_names_the_embed_command(tmp_path):
    assert run("init", tmp_path / "empty").exit_code == 0
    result = run("probe", tmp_path / "empty", "--task", "toy")
    assert_clean_error(result, "has no embeddings yet; run `embedstore embed")
    result = run("probe", tmp_path / "empty", "--task", "toy", "--backbones", "resnet18.random")
    assert_clean_error(result, "no embeddings for 'resnet18.random'")
    assert "run `embedstore embed" in result.output and "--backbone resnet18.random`" in result.output
