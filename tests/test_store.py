"""The store: creating, opening, versions (read old, restore, tag), compaction, labels import, info."""

from __future__ import annotations

from datetime import timedelta

import pytest

import embedstore
from embedstore import EmbedstoreError, IngestOptions, NotAStoreError


def test_init_and_open(tmp_path):
    created = embedstore.init(tmp_path / "s")
    assert created.catalog.table_names() == ["sources", "tiles", "labels", "files"]
    assert embedstore.open(tmp_path / "s").info()["tiles"] == 0
    with pytest.raises(EmbedstoreError, match="already a store"):
        embedstore.init(tmp_path / "s")


def test_not_a_store(tmp_path):
    with pytest.raises(NotAStoreError, match="is not an embedstore store; create one with `embedstore init"):
        embedstore.open(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(EmbedstoreError, match="not an empty directory"):
        embedstore.init(tmp_path / "x")
    assert (tmp_path / "x" / "file").read_text() == "keep me"


def test_read_old_versions_restore_and_tag(store, image_folder, tmp_path):
    store.ingest([image_folder / "train"], IngestOptions(progress=False))
    v_train = store.versions("tiles")[-1]["version"]
    store.tag("tiles", "train-only")
    store.ingest([image_folder / "valid"], IngestOptions(progress=False))
    assert store.catalog.read("tiles").num_rows == 10
    assert store.catalog.read("tiles", version=v_train).num_rows == 7
    assert store.catalog.read("tiles", version="train-only").num_rows == 7
    listing = store.versions("tiles")
    assert [v["rows"] for v in listing] == [0, 7, 10]
    assert listing[1]["tags"] == ["train-only"]

    new_version = store.restore("tiles", "train-only")
    assert new_version == listing[-1]["version"] + 1 and store.catalog.read("tiles").num_rows == 7
    with pytest.raises(EmbedstoreError, match="has no version 99"):
        store.catalog.read("tiles", version=99)
    with pytest.raises(EmbedstoreError, match="has no tag 'nope'"):
        store.restore("tiles", "nope")


def test_compaction_removes_old_versions_but_keeps_tagged(store, image_folder):
    store.ingest([image_folder / "train"], IngestOptions(progress=False))
    store.tag("tiles", "keep")
    tagged = store.versions("tiles")[-1]["version"]
    store.ingest([image_folder / "valid"], IngestOptions(progress=False))
    store.ingest([image_folder], IngestOptions(task="t", progress=False))
    before = len(store.versions("tiles"))
    report = store.compact(older_than=timedelta(0))
    after = store.versions("tiles")
    assert (
        report.tables["tiles"].versions_before == before > report.tables["tiles"].versions_after == len(after)
    )
    assert tagged in [v["version"] for v in after]
    assert store.catalog.read("tiles", version="keep").num_rows == 7
    assert store.catalog.read("tiles").num_rows == 10
    assert store.compact(older_than=timedelta(days=7)).tables["tiles"].versions_after == len(after)


def test_labels_import_by_tile_id_and_by_position(store, image_folder, tmp_path):
    store.ingest([image_folder], IngestOptions(progress=False))
    tiles = store.catalog.read("tiles").to_pylist()
    by_id = tmp_path / "by_id.csv"
    by_id.write_text("tile_id,label\n" + "".join(f"{t['tile_id']},pos\n" for t in tiles[:4]))
    assert store.import_labels("mitosis", by_id).labels_written == 4
    sources = {s["source_id"]: s["uri"] for s in store.catalog.read("sources").to_pylist()}
    first = tiles[5]
    by_position = tmp_path / "by_pos.csv"
    by_position.write_text(f"source,x,y,label\n{sources[first['source_id']]},0,0,neg\n")
    assert store.import_labels("mitosis", by_position).labels_written == 1
    assert store.info()["tasks"]["mitosis"] == {"neg": 1, "pos": 4}


def test_labels_for_unknown_tiles_write_nothing(store, image_folder, tmp_path):
    store.ingest([image_folder], IngestOptions(progress=False))
    bad = tmp_path / "bad.csv"
    tile = store.catalog.read("tiles").to_pylist()[0]["tile_id"]
    bad.write_text(f"tile_id,label\n{tile},a\ndeadbeef,b\n")
    with pytest.raises(
        EmbedstoreError, match=r"1 row\(s\) name tiles that are not in the store \(deadbeef\)"
    ):
        store.import_labels("t", bad)
    assert store.catalog.read("labels").num_rows == 0


def test_info_counts(store, image_folder):
    store.ingest([image_folder], IngestOptions(task="tumour", progress=False))
    info = store.info()
    assert info["tiles"] == 10 and info["sources"]["ok"] == 10 and info["sources"]["failed"] == 0
    assert info["tables"]["tiles"]["rows"] == 10 and info["disk_bytes"] > 0
    assert info["tasks"]["tumour"] == {"normal": 4, "tumour": 6}
    assert info["files"] == 10
