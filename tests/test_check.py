"""`check` finds planted duplicates, orphans and provenance problems; `--repair` removes what it can in
one new version per table (undone by restore); a store that is fine is left untouched."""

from __future__ import annotations

import json

import lance
import pyarrow as pa
import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from tests.helpers import key_counts, table_versions, write_tiles

FAST = "handcrafted.color_texture"
EMB = "emb__handcrafted_color_texture"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def store(tmp_path) -> embedstore.Store:
    store = embedstore.init(tmp_path / "store")
    store.ingest([write_tiles(tmp_path / "tiles", 8, seed=0)], task="t", progress=False)
    store.embed(FAST, progress=False, workers=0)
    return store


def append_raw(store: embedstore.Store, table: str, rows: list[dict]) -> None:
    """Write rows past the keyed path, as a buggy or foreign writer would."""
    schema = store.catalog.dataset(table).schema
    lance.write_dataset(
        pa.Table.from_pylist(rows, schema=schema), store.catalog.table_path(table), mode="append"
    )


def plant_problems(store: embedstore.Store) -> None:
    tiles = store.catalog.read("tiles").to_pylist()
    append_raw(store, "tiles", tiles[:2])  # 2 duplicate tiles
    stray = {**tiles[0], "tile_id": "f" * 24, "source_id": "src_gone"}
    append_raw(store, "tiles", [stray])  # a tile without a source
    labels = store.catalog.read("labels").to_pylist()
    append_raw(store, "labels", [{**labels[0], "row_key": "0" * 24 + ":t", "tile_id": "0" * 24}])
    emb = store.catalog.read(EMB).to_pylist()
    append_raw(store, EMB, emb[:3] + [{**emb[0], "row_key": "e" * 24 + ":0", "tile_id": "e" * 24}])
    append_raw(store, EMB, [{**emb[1], "row_key": "f" * 24 + ":0", "tile_id": "f" * 24}])  # of the stray
    append_raw(store, "files", [{"uri": "/gone.png", "source_id": "src_gone", "ingested_at": None}])


def test_a_fresh_store_is_fine_and_repair_writes_nothing(store):
    report = store.check()
    assert report.ok and report.rows == {"sources": 8, "tiles": 8, "labels": 8, "files": 8, EMB: 8}
    versions = table_versions(store)
    repaired = store.repair()
    assert (
        repaired.ok
        and repaired.repaired == []
        and "nothing to repair; nothing was written" in repaired.notes[0]
    )
    assert table_versions(store) == versions


def test_check_finds_planted_duplicates_and_orphans(store):
    plant_problems(store)
    found = {(f.table, f.kind): f.count for f in store.check().findings}
    assert found == {
        ("tiles", "duplicate-keys"): 2,
        ("tiles", "orphans"): 1,
        ("labels", "orphans"): 1,
        (EMB, "duplicate-keys"): 3,
        (EMB, "orphans"): 2,  # one of an unknown tile, one of the stray tile that repair removes
        ("files", "orphans"): 1,
    }


def test_repair_removes_them_in_one_version_per_table_and_restore_undoes_it(store):
    plant_problems(store)
    before = table_versions(store)
    report = store.repair()
    assert report.ok, report.summary()
    removed = {r["table"]: r["removed"] for r in report.repaired}
    assert removed == {"tiles": 3, "labels": 1, "files": 1, EMB: 5}
    after = table_versions(store)
    assert {name: after[name] - before[name] for name in after} == {
        "sources": 0,
        "tiles": 1,
        "labels": 1,
        "files": 1,
        EMB: 1,
    }
    for table, key in [("tiles", "tile_id"), ("labels", "row_key"), ("files", "uri"), (EMB, "row_key")]:
        assert key_counts(store, table, key) == (8, 8)
    assert store.embeddings(FAST).task("t").count() == 8
    store.restore("tiles", before["tiles"])  # undo: the planted rows are back
    assert key_counts(store, "tiles", "tile_id") == (11, 9)


def test_provenance_that_does_not_fit_is_reported_not_repaired(store):
    dataset = store.catalog.dataset(EMB)
    metadata = {k.decode(): v.decode() for k, v in dataset.schema.metadata.items()}
    record = json.loads(metadata["embedstore.provenance"])
    metadata["embedstore.provenance"] = json.dumps({**record, "dim": 99, "backbone": "resnet18.random"})
    dataset.replace_schema_metadata(metadata)
    findings = [f for f in store.check().findings if f.kind == "provenance"]
    assert len(findings) == 2 and not any(f.repairable for f in findings)
    assert "51 dims, the provenance says 99" in findings[0].message
    report = store.repair()
    assert not report.ok and report.repaired == []


def test_cli_check_exit_codes_json_and_repair(store):
    ok = run("check", store.root)
    assert ok.exit_code == 0 and "ok: no problems found" in ok.output
    plant_problems(store)
    found = run("check", store.root, "--json")
    assert found.exit_code == 1
    data = json.loads(found.output)
    assert data["ok"] is False and {f["kind"] for f in data["findings"]} == {"duplicate-keys", "orphans"}
    repaired = run("check", store.root, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "repaired tiles: 3 row(s) removed in version" in repaired.output
    assert "ok: no problems found" in repaired.output
    again = run("check", store.root, "--repair")
    assert again.exit_code == 0 and "nothing to repair; nothing was written" in again.output


def test_failed_sources_are_listed(tmp_path):
    store = embedstore.init(tmp_path / "s")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.svs").write_bytes(b"not a slide" * 50)
    store.ingest([tmp_path / "data"], skip_errors=True, progress=False, mpp=0.5)
    report = store.check()
    assert report.ok and report.failed_sources[0]["uri"].endswith("broken.svs")
    assert "failed source:" in report.summary()
