"""A Store holds its catalog (`store.catalog`, the store's tables) rather than being one. The raw table
methods still answer through a Store for one release, with a DeprecationWarning naming the replacement;
the verbs and entry points documented to take a store take a Store or its Catalog alike."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pytest

import embedstore
import heads
from embedstore import IngestOptions
from embedstore.storage.catalog import Catalog, catalog_of
from heads.tile_batches import split_tiles


@pytest.fixture
def filled(store, image_folder) -> embedstore.Store:
    """The store with 10 tiles labelled for task `kind` (tumour / normal)."""
    store.ingest([image_folder], IngestOptions(task="kind", progress=False))
    return store


def test_a_store_holds_a_catalog_and_is_not_one(store):
    assert not isinstance(store, Catalog)
    assert isinstance(store.catalog, Catalog)
    assert store.catalog.root == store.root
    assert catalog_of(store) is store.catalog
    assert catalog_of(store.catalog) is store.catalog
    assert embedstore.open(store.root).catalog.table_names() == store.catalog.table_names()


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("table_names", ()),
        ("has_table", ("tiles",)),
        ("read", ("tiles",)),
        ("count", ("tiles",)),
        ("tile_ids", ()),
    ],
)
def test_a_raw_method_through_the_store_warns_and_answers_as_the_catalog(filled, method, args):
    with pytest.warns(DeprecationWarning, match=rf"use store\.catalog\.{method}"):
        through_store = getattr(filled, method)(*args)
    assert through_store == getattr(filled.catalog, method)(*args)


def test_a_raw_write_through_the_store_warns_and_writes(store):
    schema = pa.schema([pa.field("key", pa.string(), nullable=False)])
    with pytest.warns(DeprecationWarning, match=r"store\.catalog\.create_table"):
        store.create_table("notes", schema)
    assert store.catalog.has_table("notes")
    with pytest.warns(DeprecationWarning, match=r"store\.catalog\.drop_table"):
        store.drop_table("notes")
    assert not store.catalog.has_table("notes")


def test_an_unknown_attribute_is_still_an_attribute_error(store):
    with pytest.raises(AttributeError, match="no attribute 'no_such_method'"):
        store.no_such_method  # noqa: B018


def test_the_verbs_and_documented_methods_do_not_warn(filled):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert filled.info()["tiles"] == 10
        assert filled.check().summary()
        version = filled.tag("tiles", "ten")
        assert filled.restore("tiles", "ten") > version
        assert [v["rows"] for v in filled.versions("tiles")][-1] == 10
        filled.require_writable()
        assert filled.is_local and filled.root.is_dir()


def test_entry_points_take_a_store_or_its_catalog(filled):
    assert heads.list_heads(filled) == heads.list_heads(filled.catalog) == []
    by_store = split_tiles(filled, "kind", validation=0.5, seed=1)
    by_catalog = split_tiles(filled.catalog, "kind", validation=0.5, seed=1)
    assert by_store.train_ids == by_catalog.train_ids
    assert by_store.validation_ids == by_catalog.validation_ids
