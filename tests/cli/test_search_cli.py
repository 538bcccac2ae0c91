"""`embedstore index` and `embedstore search` from the command line: output, exports, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli.test_cli import assert_clean_error, run
from tests.helpers import clustered_vectors, vector_store

KEY = "synthetic.vectors"


@pytest.fixture
def store_path(tmp_path):
    vector_store(tmp_path / "store", clustered_vectors(1500, dim=16, clusters=8))
    return tmp_path / "store"


def test_index_then_search_json_export_and_list(store_path, tmp_path):
    built = run("index", store_path, "--backbone", KEY, "--kind", "hnsw", "--json")
    assert built.exit_code == 0, built.output
    manifest = json.loads(built.stdout)
    assert manifest["kind"] == "hnsw" and manifest["rows"] == 1500 and manifest["recall_at_10"] >= 0.95
    listed = run("index", store_path, "--list")
    assert listed.exit_code == 0 and "index 'hnsw': faiss hnsw" in listed.output

    export = tmp_path / "candidates.csv"
    args = ["search", store_path, "--backbone", KEY, "--tile", "t000001", "--tile", "t000002", "-k", "7"]
    found = run(*args, "--negative", "t000003", "--json", "--export", export)
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert [h["rank"] for h in hits] == list(range(1, 8))
    assert all({"tile_id", "score", "rank", "slide"} <= set(h) for h in hits)
    imported = run("labels", "import", store_path, export, "--task", "candidates")
    assert imported.exit_code == 0 and "7 label(s) written" in imported.output

    text = run(*args, "--exclude-query-slides")
    assert text.exit_code == 0 and "7 hit(s) from index 'hnsw'" in text.output


def test_search_with_vectors_file(store_path, tmp_path):
    path = tmp_path / "q.npy"
    np.save(path, clustered_vectors(1500, dim=16, clusters=8)[10])
    result = run("search", store_path, "--backbone", KEY, "--vectors", path, "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["tile_id"] == "t000010"  # notes go to stderr
    assert "note: no index yet" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tile", "nope"], "--tile 'nope': no such tile"),
        (["--tile", "t000001", "-k", "99999"], "-k 99999 is more than the 1500 vectors"),
        (["--tile", "t000001", "--index", "missing"], "no index 'missing'"),
        (["--vectors", "VECTORS"], "--vectors has shape (3,)"),
        (["--vectors", "NOT_NPY"], "not a readable .npy file"),
        (["--image", "NOT_IMAGE"], "not a readable image"),
    ],
)
def test_search_errors_are_one_line_exit_2_and_write_nothing(store_path, tmp_path, args, message):
    np.save(tmp_path / "v.npy", np.zeros(3, np.float32))
    (tmp_path / "x.npy").write_text("text")
    (tmp_path / "x.png").write_text("text")
    files = {"VECTORS": tmp_path / "v.npy", "NOT_NPY": tmp_path / "x.npy", "NOT_IMAGE": tmp_path / "x.png"}
    args = [files.get(a, a) for a in args]
    export = tmp_path / "out.csv"
    result = run(
        "search", store_path, "--backbone", KEY, *args, "--export", export, "--html", tmp_path / "r.html"
    )
    assert_clean_error(result, message)
    assert not export.exists() and not (tmp_path / "r.html").exists()


def test_index_errors(store_path, tmp_path):
    assert_clean_error(run("index", store_path, "--backbone", "no.such"), "no embeddings for 'no.such'")
    small = vector_store(tmp_path / "small", clustered_vectors(500, dim=16)).root
    assert_clean_error(run("index", small, "--backbone", KEY, "--kind", "ivfpq"), "needs at least 1000")
    assert not list(small.glob("indexes/*/*/manifest.json"))
    empty = tmp_path / "empty"
    assert run("init", empty).exit_code == 0
    assert_clean_error(run("search", empty, "--backbone", KEY, "--tile", "a"), "no embeddings for")
