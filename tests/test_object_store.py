"""A store on object storage: a real S3-compatible server (moto, server mode) on localhost, spoken to over
HTTP by Lance and by pyarrow's S3 filesystem exactly as S3 would be. Same rows and vectors as a local
store; every command works; racing and killed writers leave one row per key; bad URIs fail in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore.core.errors import EmbedstoreError
from embedstore.core.location import ObjectPath, store_location
from embedstore.storage.embedding_tables import table_name
from tests.helpers import key_counts, write_tiles
from tests.s3_server import BUCKET, new_prefix
from tests.test_concurrency import finish, run_together, start

FAST = "handcrafted.color_texture"
CNN = "resnet18.random"  # a real CNN with seeded weights: no download
QUIET = {"progress": False}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    return write_tiles(tmp_path_factory.mktemp("tiles") / "tiles", 16, seed=5)


def _vectors(store: embedstore.Store, key: str) -> dict[tuple[str, int], np.ndarray]:
    table = store.catalog.read(table_name(key), columns=["tile_id", "view", "vector"])
    rows = list(zip(table.column("tile_id").to_pylist(), table.column("view").to_pylist(), strict=True))
    assert len(rows) == len(set(rows)), "duplicate (tile, view) rows"
    return dict(zip(rows, np.asarray(table.column("vector").to_pylist(), np.float32), strict=True))


def _ingest_and_embed(where: str | Path, tiles: Path) -> embedstore.Store:
    store = embedstore.init(where)
    store.ingest([tiles], task="kind", **QUIET)
    store.embed(CNN, batch_size=8, **QUIET)
    return store


def test_a_store_on_s3_holds_what_a_local_store_holds(tmp_path, s3, tiles):
    on_s3 = _ingest_and_embed(new_prefix(), tiles)
    local = _ingest_and_embed(tmp_path / "local", tiles)
    assert isinstance(on_s3.root, ObjectPath) and not on_s3.is_local
    for table, key in [("tiles", "tile_id"), ("sources", "source_id"), ("labels", "row_key")]:
        assert sorted(on_s3.catalog.read(table, columns=[key]).column(key).to_pylist()) == sorted(
            local.catalog.read(table, columns=[key]).column(key).to_pylist()
        )
    expected, found = _vectors(local, CNN), _vectors(on_s3, CNN)
    assert found.keys() == expected.keys() and len(found) == 16
    for row, vector in expected.items():
        np.testing.assert_allclose(found[row], vector, rtol=1e-5, atol=1e-6)
    # reopened by URI in a new object: the same store, checked clean, re-runs add nothing
    reopened = embedstore.open(str(on_s3.root))
    assert reopened.info()["tiles"] == 16 and reopened.info()["disk_bytes"] > 0
    assert reopened.ingest([tiles], task="kind", **QUIET).tiles_added == 0
    assert reopened.embed(CNN, **QUIET).rows_written == 0
    assert reopened.check().ok


def test_search_index_and_heads_live_in_the_bucket(s3, tiles):
    store = _ingest_and_embed(new_prefix(), tiles)
    first = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id")[0].as_py()
    found = store.search(CNN, tiles=[first], k=5).table.column("tile_id").to_pylist()
    assert len(found) == 5 and first not in found
    # the index was saved under the store's URI; a fresh process-like open loads it from there
    index_files = (store.root / "indexes").glob("*/*/*")
    assert any(path.name == "manifest.json" for path in index_files)
    again = embedstore.open(str(store.root)).search(CNN, tiles=[first], k=5)
    assert again.table.column("tile_id").to_pylist() == found
    assert not any("built index" in note for note in again.notes)

    import heads

    trained = heads.train(store, CNN, "kind", name="kind-head", head="linear", epochs=3, progress=False)
    assert (store.root / "heads" / "kind-head" / "card.json").is_file()
    predicted = heads.predict(embedstore.open(str(store.root)), "kind-head", progress=False)
    assert predicted.total_rows == 16 and trained.card.name == "kind-head"
    info = embedstore.open(str(store.root)).info()  # `info` lists them from the bucket too
    assert [(i["name"], i["status"]) for i in info["indexes"]] == [("auto", "current")]
    assert [(h["name"], h["status"]) for h in info["heads"]] == [("kind-head", "current")]


def test_the_cli_works_on_an_s3_uri(s3, tiles):
    uri, runner = new_prefix(), CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout  # what a user pipes: --json on stdout, notes and summaries on stderr

    run("init", uri)
    run("ingest", uri, tiles, "--task", "kind", "--no-progress")
    run("embed", uri, "--backbone", FAST, "--no-progress")
    info = json.loads(run("info", uri, "--json"))
    assert info["store"] == uri and info["tiles"] == 16
    run("index", uri, "--backbone", FAST)
    tile = embedstore.open(uri).catalog.read("tiles", columns=["tile_id"]).column("tile_id")[0].as_py()
    searched = json.loads(run("search", uri, "--backbone", FAST, "--tile", tile, "-k", "3", "--json"))
    assert len(searched) == 3 and tile not in {hit["tile_id"] for hit in searched}
    assert json.loads(run("check", uri, "--json"))["ok"]
    assert "16 rows" in run("versions", uri, "--table", "tiles")
    run("compact", uri, "--older-than", "0s")
    assert "nothing to do" in run("upgrade", uri)
    assert embedstore.open(uri).catalog.count("tiles") == 16 and embedstore.open(uri).check().ok


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "s3://no-such-bucket-here/store"], "does not exist"),
        (["init", "s3://no-such-bucket-here/store"], "does not exist"),
        (["info", f"s3://{BUCKET}/never-created"], "is not an embedstore store"),
        (["init", "ftp://host/store"], "unknown storage scheme"),
        (["init", "s3://"], "names no bucket"),
    ],
)
def test_bad_object_store_uris_fail_in_one_line(s3, args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_without_credentials_the_error_says_which_settings_to_set(s3, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws files either
    with pytest.raises(EmbedstoreError, match="AWS_ACCESS_KEY_ID"):
        embedstore.init("s3://bucket-without-credentials/store")


def test_two_processes_ingesting_and_embedding_one_s3_store_leave_one_row_per_key(s3, tiles):
    uri = new_prefix()
    embedstore.init(uri)
    command = ("ingest", uri, tiles, "--task", "kind", "--chunk", "4")
    run_together(command, command)
    embed = ("embed", uri, FAST, "--chunk", "4")
    run_together(embed, embed)
    store = embedstore.open(uri)
    for table, key in [("tiles", "tile_id"), ("sources", "source_id"), ("labels", "row_key")]:
        rows, distinct = key_counts(store, table, key)
        assert rows == distinct == 16, table
    assert store.catalog.count(table_name(FAST)) == 16 and store.check().ok


def test_an_embed_killed_mid_run_on_s3_resumes_to_the_exact_rows(s3, tiles):
    uri = new_prefix()
    store = embedstore.init(uri)
    store.ingest([tiles], **QUIET)
    fault = {"EMBEDSTORE_FAULT": "write.after_commit:kill:2"}
    code, _, _ = finish(start("embed", uri, FAST, "--chunk", "4", env=fault))
    assert code != 0  # killed after its second commit
    partial = store.catalog.count(table_name(FAST))
    assert 0 < partial < 16 and store.check().ok
    code, _, err = finish(start("embed", uri, FAST, "--chunk", "4"))
    assert code == 0, err
    assert store.catalog.count(table_name(FAST)) == 16 and store.check().ok


def test_local_paths_and_file_uris_stay_local(tmp_path):
    assert store_location(tmp_path / "a") == (tmp_path / "a").resolve()
    assert store_location(f"file://{tmp_path}/a") == (tmp_path / "a").resolve()
    assert str(store_location("s3://bucket/some/prefix/")) == "s3://bucket/some/prefix"
    assert os.fspath(store_location("relative")).startswith("/")
