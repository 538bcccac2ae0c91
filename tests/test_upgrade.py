"""Stores from embedstore 0.1 (format 1): refused with the command that upgrades them; `upgrade` keeps
every row, declares the keys, adds row_key and the files table; the LanceDB layout stays readable."""

from __future__ import annotations

import json

import lance
import lancedb
import pyarrow as pa
import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore import NotAStoreError
from embedstore.core.schema import declared_key
from tests.helpers import write_tiles

FAST = "handcrafted.color_texture"
EMB = "emb__handcrafted_color_texture"


def downgrade_to_format_1(store: embedstore.Store) -> None:
    """Rewrite a store as embedstore 0.1 left it: no declared keys, no row_key, no files table."""
    for name in ["sources", "tiles", "labels", EMB]:
        table = store.catalog.read(name)
        if "row_key" in table.column_names:
            table = table.drop_columns(["row_key"])
        fields = [pa.field(f.name, f.type, f.nullable) for f in table.schema]  # field metadata dropped
        old = pa.schema(fields, metadata=table.schema.metadata)
        lance.write_dataset(table.cast(old), store.catalog.table_path(name), schema=old, mode="overwrite")
    assert declared_key(store.catalog.dataset("tiles").schema) is None
    store.catalog.drop_table("files")
    marker = json.loads((store.root / "embedstore.json").read_text())
    (store.root / "embedstore.json").write_text(json.dumps({**marker, "format_version": 1}))


@pytest.fixture
def old_store(tmp_path) -> embedstore.Store:
    store = embedstore.init(tmp_path / "old")
    store.ingest([write_tiles(tmp_path / "tiles", 6, seed=2)], task="t", progress=False)
    store.embed(FAST, progress=False, workers=0)
    downgrade_to_format_1(store)
    return store


def test_a_format_1_store_names_the_upgrade_command(old_store):
    with pytest.raises(NotAStoreError, match="store format 1 .*`embedstore upgrade "):
        embedstore.open(old_store.root)
    result = CliRunner().invoke(app, ["info", str(old_store.root)])
    assert result.exit_code == 2 and "embedstore upgrade" in result.output


def test_upgrade_keeps_rows_and_declares_keys(old_store):
    result = CliRunner().invoke(app, ["upgrade", str(old_store.root)])
    assert result.exit_code == 0, result.output
    assert "store format 1 -> 2" in result.output
    store = embedstore.open(old_store.root)
    assert store.check().ok
    assert {
        name: declared_key(store.catalog.dataset(name).schema) for name in store.catalog.table_names()
    } == {
        "sources": "source_id",
        "tiles": "tile_id",
        "labels": "row_key",
        "files": "uri",
        EMB: "row_key",
    }
    assert store.info()["tiles"] == 6 and store.info()["files"] == 6
    X, ids, labels = store.embeddings(FAST).task("t").to_numpy()
    assert X.shape == (6, 51) and sorted(labels) == ["a", "a", "a", "b", "b", "b"]
    assert store.embed(FAST, progress=False, workers=0).rows_written == 0  # provenance kept
    again = CliRunner().invoke(app, ["upgrade", str(old_store.root)])
    assert "nothing to do" in again.output


def test_lancedb_opens_the_same_tables(tmp_path):
    store = embedstore.init(tmp_path / "s")
    store.ingest([write_tiles(tmp_path / "tiles", 4, seed=1)], progress=False)
    db = lancedb.connect(str(store.root))
    assert set(db.list_tables().tables) == set(store.catalog.table_names())
    assert db.open_table("tiles").count_rows() == 4
