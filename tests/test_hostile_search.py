"""Hostile input to search, index, probe and the heads commands: one line (`error: ...`, exit 2) naming the
option, never a traceback, never silent nonsense, and nothing in the store or beside it created or changed.

One small store is built per module (150 tiles on 6 slides, 16-d vectors, task `tumour`, an `auto` index)
and only read by the failing commands; the snapshot of its files proves it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import embedstore
from embedstore.core.errors import EmbedstoreError
from embedstore.search.faiss_index import FaissIndex, gpu_available
from embedstore.search.space import VectorSpace
from tests.cli.test_cli import assert_clean_error, run
from tests.helpers import add_task, clustered_vectors, vector_store

KEY = "synthetic.vectors"
TILES = 150
BLOCKED = "a-file"  # a file where an output folder would have to be made


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile_search") / "store"
    store = vector_store(path, clustered_vectors(TILES, dim=16, clusters=4), slides=6)
    add_task(store, "tumour", {f"t{i:06d}": "tumour" if i % 3 == 0 else "normal" for i in range(TILES)})
    store.index(KEY)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root`: relative path -> (size, mtime)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def search(store_path: Path, *args) -> object:
    return run("search", store_path, "--backbone", KEY, *args)


def refused_and_unchanged(store_path: Path, args: list, pattern: str) -> str:
    """Run the CLI; assert one clean error line containing `pattern` and an unchanged store."""
    before = snapshot(store_path.parent)
    result = run(*args)
    assert_clean_error(result, pattern)
    assert snapshot(store_path.parent) == before
    return result.output


# -- output files: checked before the work ------------------------------------------------------------


OUTPUTS = [
    ("train-head", ["--backbone", KEY, "--task", "tumour", "--name", "h", "--no-progress"], "--json"),
    ("probe", ["--task", "tumour", "--backbones", KEY, "--folds", 2, "--no-progress"], "--plot"),
    ("probe", ["--task", "tumour", "--backbones", KEY, "--folds", 2, "--no-progress"], "--json"),
    ("probe", ["--task", "tumour", "--backbones", KEY, "--folds", 2, "--no-progress"], "--csv"),
    ("search", ["--backbone", KEY, "--tile", "t000001"], "--export"),
    ("search", ["--backbone", KEY, "--tile", "t000001"], "--html"),
    ("predict", ["--head", "h", "--no-progress"], "--export"),
    ("heatmap", ["--head", "h", "--slide", "slide1"], "--out"),
    ("heatmap", ["--head", "h", "--slide", "slide1"], "--export-geojson"),
]


@pytest.mark.parametrize(("command", "args", "flag"), OUTPUTS, ids=[f"{c} {f}" for c, _, f in OUTPUTS])
def test_an_output_file_whose_folder_cannot_be_made_is_refused_before_any_work(
    store_path, tmp_path, command, args, flag
):
    (tmp_path / BLOCKED).write_text("in the way")
    target = tmp_path / BLOCKED / "folder" / "out.file"
    output = refused_and_unchanged(
        store_path,
        [command, store_path, *args, flag, target],
        f"{flag} '{target}' must be a file you can write",
    )
    assert f"{tmp_path / BLOCKED} is a file, so the folder {target.parent} cannot be made" in output
    assert not (store_path / "heads").exists()


def test_preview_refuses_an_output_file_whose_folder_cannot_be_made(tmp_path):
    (tmp_path / BLOCKED).write_text("in the way")
    assert_clean_error(run("preview", tmp_path / "slide.svs", "--out", tmp_path / BLOCKED / "p.png"), "--out")


def test_an_output_path_that_is_a_folder_is_refused(store_path, tmp_path):
    output = refused_and_unchanged(
        store_path,
        ["search", store_path, "--backbone", KEY, "--tile", "t000001", "--export", tmp_path],
        "--export",
    )
    assert "it is a folder; name a file in it" in output


def test_a_missing_output_folder_is_made_when_writing_and_not_when_the_command_fails(store_path, tmp_path):
    failed = search(store_path, "--tile", "no-such-tile", "--export", tmp_path / "new" / "hits.csv")
    assert_clean_error(failed, "--tile 'no-such-tile': no such tile")
    assert not (tmp_path / "new").exists()
    args = ["--task", "tumour", "--backbones", KEY, "--folds", 2, "--seeds", 1, "--shots", "none"]
    written = run(
        "probe", store_path, *args, "--no-progress", "--json", tmp_path / "new" / "deeper" / "p.json"
    )
    assert written.exit_code == 0, written.output
    assert json.loads((tmp_path / "new" / "deeper" / "p.json").read_text())["task"] == "tumour"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_an_output_file_in_a_folder_without_write_permission_is_refused(store_path, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    output = refused_and_unchanged(
        store_path,
        ["search", store_path, "--backbone", KEY, "--tile", "t000001", "--html", locked / "r.html"],
        "--html",
    )
    assert f"you may not write in {locked}" in output


def test_the_python_api_refuses_an_output_it_cannot_write_too(store_path, tmp_path):
    (tmp_path / BLOCKED).write_text("in the way")
    result = embedstore.open(store_path).search(KEY, tiles=["t000001"], k=3)
    with pytest.raises(EmbedstoreError, match="^--export .* cannot be made; choose another folder$"):
        result.export_labels(tmp_path / BLOCKED / "hits.csv")
    assert result.export_labels(tmp_path / "made" / "hits.csv").read_text().startswith("tile_id,label")


# -- train-head: a head too large for memory ---------------------------------------------------------


def test_a_hidden_layer_too_large_for_memory_is_refused_with_its_size_before_allocating(store_path):
    args = ["train-head", store_path, "--backbone", KEY, "--task", "tumour", "--head", "mlp"]
    output = refused_and_unchanged(
        store_path, [*args, "--hidden", 100_000_000, "--name", "huge", "--no-progress"], "(--hidden)"
    )
    assert "16 -> 100000000 -> 2 head needs about" in output and "GiB" in output
    assert "use smaller hidden widths" in output
    assert not (store_path / "heads").exists()


def test_the_estimator_refuses_a_head_too_large_for_memory_before_allocating():
    from heads import MLPHead

    x, y = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32), np.arange(64) % 2
    with pytest.raises(
        EmbedstoreError, match=r"hidden=\(10000000000,\) \(--hidden\): a 8 -> 10000000000 -> 2"
    ):
        MLPHead(hidden=(10**10,), device="cpu").fit(x, y)


def test_a_wide_head_predicts_in_row_chunks_that_give_the_same_probabilities(monkeypatch):
    from heads import MLPHead, estimators

    x, y = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32), np.arange(64) % 2
    head = MLPHead(hidden=(4096,), epochs=1, batch_size=32, device="cpu").fit(x, y)
    whole = head.predict_proba(x)
    monkeypatch.setattr(estimators, "PREDICT_BYTES", 3 * 4 * 4096 * 7)  # 7 rows per forward pass
    np.testing.assert_allclose(head.predict_proba(x), whole, rtol=1e-5, atol=1e-7)


# -- search --vectors ---------------------------------------------------------------------------------


def save(tmp_path: Path, array: np.ndarray, name: str = "q.npy") -> Path:
    np.save(tmp_path / name, array)
    return tmp_path / name


def stored(store_path: Path) -> np.ndarray:
    return embedstore.open(store_path).embeddings(KEY).to_numpy().X


def test_vectors_of_text_are_refused_in_one_line(store_path, tmp_path):
    path = save(tmp_path, np.array([["a"] * 16]))
    refused_and_unchanged(
        store_path, ["search", store_path, "--backbone", KEY, "--vectors", path], "--vectors holds <U1 values"
    )


def test_vectors_of_complex_numbers_are_refused(store_path, tmp_path):
    path = save(tmp_path, np.ones((1, 16), complex))
    assert_clean_error(search(store_path, "--vectors", path), "--vectors holds complex128 values")


@pytest.mark.parametrize(
    ("value", "row", "message"),
    [
        (np.nan, 1, "holds NaN or infinite values"),
        (np.inf, 1, "holds NaN or infinite"),
        (1e39, 1, "holds values beyond float32"),
    ],
)
def test_non_finite_or_overflowing_vectors_are_refused_naming_the_row(
    store_path, tmp_path, value, row, message
):
    vectors = np.ones((2, 16))
    vectors[row, 3] = value
    path = save(tmp_path, vectors)
    assert_clean_error(search(store_path, "--vectors", path), f"--vectors row {row} {message}")


def test_huge_vectors_search_by_their_direction_not_all_zero_scores(store_path, tmp_path):
    vectors = stored(store_path)
    mean = VectorSpace.fit("cosine", True, vectors).mean.astype(np.float64)
    direction = vectors[10] - mean
    plain = search(store_path, "--vectors", save(tmp_path, mean + direction, "plain.npy"), "-k", 5, "--json")
    huge = search(
        store_path, "--vectors", save(tmp_path, mean + 1e37 * direction, "huge.npy"), "-k", 5, "--json"
    )
    assert plain.exit_code == 0 and huge.exit_code == 0, huge.output
    plain_hits, huge_hits = json.loads(plain.stdout), json.loads(huge.stdout)
    assert [h["tile_id"] for h in huge_hits] == [h["tile_id"] for h in plain_hits]
    assert huge_hits[0]["tile_id"] == "t000010" and huge_hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["score"] for h in huge_hits] == pytest.approx([h["score"] for h in plain_hits], abs=1e-4)


def test_a_vector_with_no_direction_after_centring_is_refused(store_path, tmp_path):
    mean = VectorSpace.fit("cosine", True, stored(store_path)).mean
    path = save(tmp_path, np.stack([stored(store_path)[0], mean]))
    assert_clean_error(
        search(store_path, "--vectors", path), "--vectors row 1 is zero after centring on the table's mean"
    )


def test_an_l2_query_whose_squared_length_overflows_is_refused():
    space = VectorSpace("l2")
    problem = space.query_problem(space.prepare(np.full((2, 4), [[1.0], [1e38]], np.float32)))
    assert problem == (1, "is too long for l2 scores in float32; scale it down")


# -- search --where -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("1=1; drop table tiles", "(a ';' ends it there and the rest would be ignored)"),
        (
            "dataset = 'x') OR (1=1",
            "must be one SQL expression on one line (a ')' closes more than was opened)",
        ),
        ("(dataset = 'even'", "(a '(' is never closed)"),
        ("slide = 'a", "(a ' quote is never closed)"),
        ("x > 1 /* note", "(a /* comment is never closed)"),
        ("dataset = 'even' garbage", "unexpected 'garbage' where the expression (or a parenthesis) ends"),
        ("x > 100 x < 5", "unexpected 'x'"),
        ("x > 100 LIMIT 3", "unexpected 'LIMIT'"),
        ("dataset = 'even' AND", "Expected: an expression"),
        ("nosuch = 1", "No field named nosuch. columns: tile_id, source_id, x, y"),
        ("x = 'abc'", "could not convert to literal of type 'Int64'"),
        ("x", "does not return a boolean"),
    ],
)
def test_a_where_that_does_not_parse_in_full_is_refused_showing_it_without_lance_internals(
    store_path, where, reason
):
    output = refused_and_unchanged(
        store_path,
        ["search", store_path, "--backbone", KEY, "--tile", "t000001", "--where", where],
        "--where",
    )
    assert repr(where) in output and reason in output
    assert ".rs:" not in output and "/home/" not in output and "SELECT 1 FROM" not in output


def test_a_where_with_parentheses_and_a_trailing_comment_filters_as_written(store_path):
    where = "(dataset = 'even' AND x >= 0) OR (slide = 'none') -- candidates"
    result = search(store_path, "--tile", "t000001", "-k", 20, "--where", where, "--json")
    assert result.exit_code == 0, result.output
    assert '"dataset": "odd"' not in result.stdout and result.stdout.count('"dataset": "even"') == 20


def test_the_embeddings_query_refuses_a_filter_lance_would_cut_short(store_path):
    query = embedstore.open(store_path).embeddings(KEY)
    with pytest.raises(EmbedstoreError, match="unexpected 'LIMIT'"):
        query.where("x > 100 LIMIT 3")
    kept = query.where("dataset = 'even'").where("x >= 64").to_polars()
    assert kept.height > 0 and set(kept["dataset"]) == {"even"} and kept["x"].min() >= 64


# -- search: tasks and queries ------------------------------------------------------------------------


def test_exclude_task_without_labels_is_refused_naming_the_tasks(store_path):
    output = refused_and_unchanged(
        store_path,
        ["search", store_path, "--backbone", KEY, "--tile", "t000001", "--exclude-task", "nosuch"],
        "--exclude-task 'nosuch': no tile is labelled for that task",
    )
    assert "tasks: tumour" in output


def test_a_tile_both_positive_and_negative_is_refused_naming_it(store_path):
    refused_and_unchanged(
        store_path,
        [
            "search",
            store_path,
            "--backbone",
            KEY,
            "--tile",
            "t000001",
            "--tile",
            "t000002",
            "--negative",
            "t000002",
        ],
        "--negative 't000002' is also a --tile",
    )


# -- index --device and failed builds ----------------------------------------------------------------


@pytest.mark.skipif(gpu_available(), reason="this machine's faiss has a GPU")
def test_index_on_cuda_without_a_gpu_is_refused_before_creating_anything(store_path):
    refused_and_unchanged(
        store_path,
        ["index", store_path, "--backbone", KEY, "--device", "cuda", "--name", "gpu"],
        "--device cuda",
    )
    assert not (store_path / "indexes" / "emb__synthetic_vectors" / "gpu").exists()


def test_a_failed_build_removes_what_it_created_and_keeps_the_other_indexes(store_path, monkeypatch):
    def failing_build(*args, **kwargs):
        raise RuntimeError("the build failed")

    before = snapshot(store_path)
    monkeypatch.setattr(FaissIndex, "build", failing_build)
    store = embedstore.open(store_path)
    for name in ("fresh", "auto"):  # a new index, and a rebuild of the existing one
        with pytest.raises(RuntimeError, match="the build failed"):
            store.index(KEY, name=name)
    assert snapshot(store_path) == before
    assert not (store_path / "indexes" / "emb__synthetic_vectors" / "fresh").exists()


# -- probe --knn-k ------------------------------------------------------------------------------------


def test_a_knn_k_beyond_the_training_fold_is_clamped_with_a_note_naming_the_effective_k(store_path):
    args = ["probe", store_path, "--task", "tumour", "--backbones", KEY, "--folds", 2, "--seeds", 1]
    result = run(*args, "--knn-k", "5,100000", "--rank-k", 5, "--shots", "none", "--no-progress")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: --knn-k")]
    assert len(notes) == 1 and "--knn-k 100000: the smallest training fold holds" in notes[0]
    smallest = int(notes[0].split("holds ")[1].split()[0])
    assert 0 < smallest < TILES and f"clamped to k={smallest}" in notes[0] and "5," not in notes[0]


def test_a_knn_k_within_the_folds_adds_no_note(store_path):
    args = ["probe", store_path, "--task", "tumour", "--backbones", KEY, "--folds", 2, "--seeds", 1]
    result = run(*args, "--knn-k", "5", "--rank-k", 5, "--shots", "none", "--no-progress")
    assert result.exit_code == 0 and "note: --knn-k" not in result.output
