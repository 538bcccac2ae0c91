"""Byte-identical files (real datasets hold them): one source and one tile, every file recorded, and
copies whose labels disagree settled by --on-label-conflict, in the report and its JSON."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore import EmbedstoreError
from tests.helpers import table_versions, write_image


@pytest.fixture
def folder(tmp_path):
    """mitosis/{atypical,normal}: 3 + 3 distinct images, a copy of atypical/a0 filed under normal (the
    labels disagree) and a copy of normal/n1 inside normal (they agree)."""
    root = tmp_path / "mitosis"
    for label, prefix in (("atypical", "a"), ("normal", "n")):
        (root / label).mkdir(parents=True)
        for i in range(3):
            write_image(root / label / f"{prefix}{i}.png", 24, seed=hash((label, i)) % 1000)
    shutil.copy(root / "atypical" / "a0.png", root / "normal" / "z_copy_of_a0.png")
    shutil.copy(root / "normal" / "n1.png", root / "normal" / "n1_again.png")
    return root


def labels(store, task="m"):
    return {r["tile_id"]: r["label"] for r in store.catalog.read("labels").to_pylist() if r["task"] == task}


def test_copies_are_one_tile_and_every_file_is_recorded(store, folder):
    report = store.ingest([folder], task="m", progress=False)
    assert report.tiles_added == 6 and report.copies == 2 and report.sources_ok == 6
    files = store.catalog.read("files").to_pylist()
    assert len(files) == 8 and len({f["source_id"] for f in files}) == 6
    copy = next(f for f in files if f["uri"].endswith("z_copy_of_a0.png"))
    first = next(f for f in files if f["uri"].endswith("atypical/a0.png"))
    assert copy["source_id"] == first["source_id"]
    assert store.info()["files"] == 8
    versions = table_versions(store)
    again = store.ingest([folder], task="m", progress=False)
    assert again.tiles_added == 0 and again.labels_written == 0 and table_versions(store) == versions


def test_conflicting_copies_keep_the_first_label_by_default(store, folder):
    report = store.ingest([folder], task="m", progress=False)
    assert len(report.label_conflicts) == 1  # the agreeing copy is not a conflict
    conflict = report.label_conflicts[0]
    assert [label for label, _ in conflict["claims"]] == ["atypical", "normal"]
    assert conflict["claims"][1][1].endswith("normal/z_copy_of_a0.png") and conflict["kept"] == "atypical"
    assert labels(store)[conflict["tile_id"]] == "atypical"
    assert sorted(labels(store).values()) == ["atypical"] * 3 + ["normal"] * 3
    assert "kept 'atypical'" in report.summary() and "--on-label-conflict" in report.summary()


def test_drop_records_no_label_for_a_conflicting_tile(store, folder):
    report = store.ingest([folder], task="m", on_label_conflict="drop", progress=False)
    tile = report.label_conflicts[0]["tile_id"]
    assert report.label_conflicts[0]["kept"] is None and tile not in labels(store)
    assert len(labels(store)) == 5 and store.info()["tiles"] == 6


def test_error_stops_before_anything_is_written(store, folder):
    versions = table_versions(store)
    with pytest.raises(EmbedstoreError, match=r"conflicting labels for task 'm': 'atypical' from .*a0\.png"):
        store.ingest([folder], task="m", on_label_conflict="error", progress=False)
    assert table_versions(store) == versions


def test_without_a_task_copies_are_no_conflict(store, folder):
    report = store.ingest([folder], progress=False)
    assert report.tiles_added == 6 and report.label_conflicts == [] and report.copies == 2


def test_points_on_one_spot_follow_the_same_policy(tmp_path):
    write_image(tmp_path / "img.png", 64, seed=3)
    (tmp_path / "points.csv").write_text(
        "image,x,y,label\nimg.png,20,20,tumour\nimg.png,20,20,stroma\nimg.png,40,40,x\n"
    )
    store = embedstore.init(tmp_path / "s")
    report = store.ingest([tmp_path / "points.csv"], task="cells", tile_size=16, progress=False)
    assert report.tiles_added == 2 and len(report.label_conflicts) == 1
    assert [label for label, _ in report.label_conflicts[0]["claims"]] == ["tumour", "stroma"]
    assert sorted(labels(store, "cells").values()) == ["tumour", "x"]


def test_cli_reports_copies_and_conflicts_as_json(tmp_path, folder):
    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path / "s"), str(folder), "--task", "m", "--json", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # the new-store notice goes to stderr
    assert report["tiles_added"] == 6 and report["copies"] == 2 and report["files_recorded"] == 8
    (conflict,) = report["label_conflicts"]
    assert conflict["kept"] == "atypical" and [c["label"] for c in conflict["claims"]] == [
        "atypical",
        "normal",
    ]
    assert conflict["claims"][1]["file"].endswith("z_copy_of_a0.png")
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            str(tmp_path / "s2"),
            str(folder),
            "--task",
            "m",
            "--on-label-conflict",
            "error",
            "--no-progress",
        ],
    )
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "conflicting labels" in result.output and not (tmp_path / "s2").exists()


def test_copies_across_splits_are_noted(store, tmp_path):
    root = tmp_path / "ds"
    for split in ("train", "valid"):
        (root / split / "a").mkdir(parents=True)
    write_image(root / "train" / "a" / "x.png", 16, seed=5)
    write_image(root / "valid" / "a" / "y.png", 16, seed=6)
    shutil.copy(root / "train" / "a" / "x.png", root / "valid" / "a" / "x_again.png")
    report = store.ingest([root], task="t", progress=False)
    assert report.tiles_added == 2 and report.copies == 1
    assert any(
        "1 image(s) have byte-identical copies in different splits (train, valid)" in n for n in report.notes
    )
    splits = sorted(t["split"] for t in store.catalog.read("tiles").to_pylist())
    assert splits == ["train", "valid"]
