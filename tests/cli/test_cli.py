"""The command line: thin over the API, one-line errors with exit code 2, JSON output."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_error(result, pattern: str):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert pattern in lines[0], lines[0]


def test_ingest_info_versions_compact(tmp_path, image_folder):
    store = tmp_path / "s"
    result = run("ingest", store, image_folder, "--task", "tumour")
    assert result.exit_code == 0, result.output
    assert "10 added" in result.output
    info = json.loads(run("info", store, "--json").output)
    assert info["tiles"] == 10 and {"sources", "tasks", "tables"} <= set(info)
    assert info["tasks"]["tumour"] == {"normal": 4, "tumour": 6}
    assert run("ingest", store, image_folder, "--task", "tumour").output.count("0 added") == 1
    assert "tagged 'v1'" in run("versions", store, "--table", "tiles", "--tag", "v1").output
    listing = json.loads(run("versions", store, "--table", "tiles", "--json").output)
    assert listing[-1]["tags"] == ["v1"] and listing[-1]["rows"] == 10
    assert run("compact", store, "--older-than", "0s").exit_code == 0
    assert "restored" in run("versions", store, "--table", "tiles", "--restore", "v1").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("info", "{tmp}/nothing"), "is not an embedstore store"),
        (("ingest", "{tmp}/s", "{tmp}/missing.svs"), "no such file or directory"),
        (("ingest", "{tmp}/s", "{tmp}/notes.txt"), "unsupported format .txt"),
        (("ingest", "{tmp}/s", "{tmp}/m.csv"), "missing column(s) path"),
        (("ingest", "{tmp}/s", "{tmp}/empty"), "nothing to ingest"),
        (
            ("ingest", "{tmp}/s", "{tmp}/slide.tif", "--tile-size", "4"),
            "--tile-size 4 must be an integer >= 8",
        ),
        (("ingest", "{tmp}/s", "{tmp}/slide.tif", "--task", ""), "--task '' must be a non-empty name"),
        (("ingest", "{tmp}/s", "{tmp}/slide.tif", "--dataset", ""), "--dataset '' must be a non-empty name"),
        (("ingest", "{tmp}/s", "{tmp}/slide.tif", "--overlap", "300"), "--overlap 300 must be smaller than"),
        (("ingest", "{tmp}/s", "{tmp}/slide.tif", "--workers", "x"), "'x' is not a valid integer"),
        (("ingest", "{tmp}/s", "{tmp}/slide.tif", "--on-label-conflict", "vote"), "'vote' is not one of"),
        (("ingest", "{tmp}/s"), "Missing argument 'PATHS...'"),
        (("embed", "{tmp}/s2", "--backbone", ""), "--backbone '' must be a non-empty name"),
        (("labels", "import", "{tmp}/s2", "{tmp}/m.csv", "--task", ""), "--task '' must be a non-empty name"),
        (("check", "{tmp}/nothing"), "is not an embedstore store"),
        (("nonsense",), "No such command 'nonsense'"),
        (("ingest", "{tmp}/s", "{tmp}/slide.tif", "--group", "patient"), "must look like KEY=COLUMN"),
        (("compact", "{tmp}/s2", "--older-than", "soon"), "is not a duration"),
        (("versions", "{tmp}/s2", "--table", "nope"), "no table 'nope'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_no_store(tmp_path, slide_path, args, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "m.csv").write_text("file,label\na.png,x\n")
    (tmp_path / "empty").mkdir()
    run("init", tmp_path / "s2")
    result = run(*(a.format(tmp=tmp_path) for a in args))
    assert_clean_error(result, message)
    assert not (tmp_path / "s").exists()  # a store made for a failed ingest is removed


def test_missing_mpp_names_the_file_and_the_fix(tmp_path, slide_pixels):
    from tests.helpers import write_pyramid

    path = write_pyramid(tmp_path / "nompp.tif", slide_pixels[0], mpp=None)
    assert_clean_error(
        run("ingest", tmp_path / "s", path), "nompp.tif: no µm/px in the file's metadata; pass --mpp"
    )
    result = run("ingest", tmp_path / "s", path, "--mpp", "0.5", "--target-mpp", "1", "--tile-size", "128")
    assert result.exit_code == 0 and "1 ingested" in result.output


def test_flat_folder_of_small_images_hints_kind_images(tmp_path, image_folder):
    flat = image_folder / "train" / "tumour"  # four 32 px PNGs, no µm/px, no class sub-folders
    result = run("ingest", tmp_path / "s", flat)
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]  # after the (cleared) progress bar
    assert "or if each 32x32 image is one tile, ingest with --kind images" in error, error
    result = run("ingest", tmp_path / "s", flat, "--kind", "images")
    assert result.exit_code == 0 and "4 added" in result.output


def test_labels_import(tmp_path, image_folder):
    store = tmp_path / "s"
    run("ingest", store, image_folder)
    info = json.loads(run("info", store, "--json").output)
    assert info["tiles"] == 10
    labels = tmp_path / "l.csv"
    labels.write_text("tile_id,label\nffff,a\n")
    assert_clean_error(run("labels", "import", store, labels, "--task", "t"), "not in the store")


def test_demo_without_network_uses_the_bundled_ihc_image(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(tmp_path / "cache"))  # nothing cached: IHC image only
    result = run("demo", "--store", tmp_path / "demo", "--no-download")
    assert result.exit_code == 0, result.output
    assert "using the IHC image only" in result.output and "tiles   " in result.output
    info = json.loads(run("info", tmp_path / "demo", "--json").output)
    assert info["tiles"] > 0
    # the head part: trained on the PCam labels, every tile predicted, scores drawn over the IHC image
    assert "head 'pcam-tumour': mlp" in result.output
    predictions = embedstore.open(tmp_path / "demo").catalog.read("pred__pcam-tumour")
    assert predictions.num_rows == info["tiles"]
    heatmap = tmp_path / "demo" / "heatmap-skimage_ihc.png"
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    detections = json.loads((tmp_path / "demo" / "heatmap-skimage_ihc.geojson").read_text())
    slide_tiles = embedstore.open(tmp_path / "demo").catalog.read("tiles", filter="slide = 'skimage_ihc.png'")
    assert (
        detections["type"] == "FeatureCollection" and len(detections["features"]) == slide_tiles.num_rows > 0
    )
