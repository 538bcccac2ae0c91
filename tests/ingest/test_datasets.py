"""Ingest of tile datasets: image folders, manifests, point annotations; resume after an interruption."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedstore import EmbedstoreError, IngestOptions
from embedstore.core import hooks
from embedstore.sources.codecs import decode_tile
from tests.helpers import write_image


def labels_of(store, task):
    rows = store.catalog.read("labels").to_pylist()
    return {r["tile_id"]: r["label"] for r in rows if r["task"] == task}


def test_image_folder_with_splits(store, image_folder):
    report = store.ingest([image_folder], IngestOptions(task="tumour", progress=False))
    assert report.tiles_added == 10 and report.labels_written == 10
    assert store.info()["tasks"] == {"tumour": {"normal": 4, "tumour": 6}}
    tiles = store.catalog.read("tiles").to_pylist()
    assert sorted(t["split"] for t in tiles).count("valid") == 3
    assert {t["dataset"] for t in tiles} == {"folder"}
    one = next(t for t in tiles if t["image"] == "train/tumour/tumour_0.png")
    # image files are stored byte for byte, at their own size
    assert one["pixels"] == (image_folder / "train/tumour/tumour_0.png").read_bytes()
    assert (one["width"], one["height"]) == (32, 32)


def test_same_tiles_many_tasks(store, image_folder):
    store.ingest([image_folder], IngestOptions(task="tumour", progress=False))
    report = store.ingest([image_folder], IngestOptions(task="other_task", progress=False))
    assert report.tiles_added == 0 and report.labels_written == 10
    assert set(store.info()["tasks"]) == {"tumour", "other_task"}


def test_without_task_labels_are_not_recorded_and_a_note_says_so(store, image_folder):
    report = store.ingest([image_folder], IngestOptions(progress=False))
    assert report.tiles_added == 10 and store.info()["tasks"] == {}
    assert any("--task" in note for note in report.notes)


def test_manifest_with_template_images_dir_and_groups(store, tmp_path, image_folder):
    manifest = tmp_path / "manifest.csv"
    rows = [("tumour", i, "tumour", f"case{i % 2}") for i in range(4)] + [
        ("normal", i, "normal", "case9") for i in range(3)
    ]
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cls", "idx", "diagnosis", "case_id"])
        writer.writerows(rows)
    options = IngestOptions(
        kind="manifest",
        task="dx",
        path_template="{cls}_{idx}.png",
        images_dir=image_folder / "train",
        label_column="diagnosis",
        groups={"patient": "case_id"},
        progress=False,
    )
    report = store.ingest([manifest], options)
    assert report.tiles_added == 7
    tiles = store.catalog.read("tiles").to_pylist()
    assert sorted({t["patient"] for t in tiles}) == ["case0", "case1", "case9"]
    assert sorted(labels_of(store, "dx").values()).count("tumour") == 4


def test_manifest_errors_name_the_problem(store, tmp_path, image_folder):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.png,x\n")
    with pytest.raises(EmbedstoreError, match=r"missing column\(s\) path .*--path-column"):
        store.ingest([manifest], IngestOptions(progress=False))
    manifest.write_text("path,label\nnope1.png,x\nnope2.png,y\n")
    with pytest.raises(EmbedstoreError, match=r"2 listed file\(s\) not found \(nope1.png, nope2.png\)"):
        store.ingest([manifest], IngestOptions(progress=False))
    assert store.info()["tiles"] == 0


def test_point_annotations_centre_a_padded_tile_on_each_point(store, tmp_path):
    from skimage import data

    image = np.asarray(data.immunohistochemistry())
    Image.fromarray(image).save(tmp_path / "ihc.png")
    points = tmp_path / "points.csv"
    # 1-based coordinates; the last point sits on the corner, so its tile is padded with white
    points.write_text(
        "image,x,y,label,split\nihc.png,101,201,a,train\nihc.png,301,51,b,train\nihc.png,1,1,a,train\n"
    )
    report = store.ingest([points], IngestOptions(task="cells", tile_size=32, one_based=True, progress=False))
    assert report.tiles_added == 3
    tiles = {(t["x"] + 16, t["y"] + 16): t for t in store.catalog.read("tiles").to_pylist()}
    np.testing.assert_array_equal(decode_tile(tiles[(100, 200)]["pixels"]), image[184:216, 84:116])
    corner = decode_tile(tiles[(0, 0)]["pixels"])
    assert (corner[:16, :16] == 255).all()
    np.testing.assert_array_equal(corner[16:, 16:], image[:16, :16])
    assert sorted(labels_of(store, "cells").values()) == ["a", "a", "b"]
    assert {t["split"] for t in tiles.values()} == {"train"}  # group keys are per image


def test_point_outside_the_image_is_refused(store, tmp_path):
    write_image(tmp_path / "im.png", 64, 1)
    (tmp_path / "p.csv").write_text("image,x,y,label\nim.png,10,10,a\nim.png,80,10,b\n")
    with pytest.raises(EmbedstoreError, match=r"point \(80, 10\) lies outside the 64x64 image"):
        store.ingest([tmp_path / "p.csv"], IngestOptions(tile_size=16, progress=False))


def test_empty_folder_and_unsupported_file(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedstoreError, match="nothing to ingest"):
        store.ingest([tmp_path / "empty"], IngestOptions(progress=False))
    (tmp_path / "notes.docx").write_bytes(b"x")
    with pytest.raises(EmbedstoreError, match=r"unsupported format \.docx"):
        store.ingest([tmp_path / "notes.docx"], IngestOptions(progress=False))


def test_interrupted_ingest_resumes_without_duplicates(store, tmp_path):
    """Interrupt the run (Ctrl-C) after some chunks were committed; a re-run completes it exactly."""
    root = tmp_path / "many" / "cls"
    root.mkdir(parents=True)
    for i in range(60):
        write_image(root / f"{i:03d}.png", 16, 100 + i)
    calls = {"n": 0}

    def interrupt(source, tile_id):
        calls["n"] += 1
        if calls["n"] == 35:
            raise KeyboardInterrupt

    options = IngestOptions(task="t", chunk_tiles=10, workers=1, progress=False)
    with hooks.inject("ingest.read_tile", interrupt), pytest.raises(KeyboardInterrupt):
        store.ingest([tmp_path / "many"], options)
    partial = store.catalog.read("tiles").num_rows
    assert 0 < partial < 60
    report = store.ingest([tmp_path / "many"], options)
    assert report.tiles_added == 60 - partial
    ids = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id").to_pylist()
    assert len(ids) == len(set(ids)) == 60
    assert len(labels_of(store, "t")) == 60
    assert store.info()["sources"]["ok"] == 60


def test_no_pixels_keeps_references_only(store, image_folder):
    store.ingest([image_folder], IngestOptions(codec="none", progress=False))
    tiles = store.catalog.read("tiles").to_pylist()
    assert len(tiles) == 10 and all(t["pixels"] is None for t in tiles)


def test_same_file_under_another_path_is_the_same_source(store, tmp_path, image_folder):
    store.ingest([image_folder], IngestOptions(progress=False))
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(image_folder, copy)
    assert store.ingest([copy], IngestOptions(progress=False)).tiles_added == 0
    assert isinstance(Path(store.catalog.read("sources").to_pylist()[0]["uri"]), Path)
