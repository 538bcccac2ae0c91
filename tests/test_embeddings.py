"""The query object: the one read path for stored embeddings (streamed, filtered, per task, per version)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import embedstore
from embedstore.core.errors import EmbedstoreError
from embedstore.embed.local import embed
from embedstore.embeddings import EmbeddingQuery
from tests.helpers import write_tiles

FAST = "handcrafted.color_texture"
OPTS = {"progress": False, "workers": 0, "batch_size": 8}


@pytest.fixture
def store(tmp_path) -> embedstore.Store:
    """10 labelled tiles (task t, dataset tiles_0) and 3 unlabelled ones (dataset unlabelled), embedded."""
    store = embedstore.init(tmp_path / "store")
    store.ingest([write_tiles(tmp_path / "tiles_0", 10, 0)], task="t", progress=False)
    store.ingest([write_tiles(tmp_path / "unlabelled", 3, 9)], progress=False)
    embed(store.catalog, FAST, **OPTS)
    return store


def test_batches_stream_with_metadata_and_labels(store):
    query = store.embeddings(FAST).task("t")
    batches = list(query.to_batches(batch_size=4))
    assert len(batches) >= 3 and all(isinstance(b, pa.RecordBatch) and b.num_rows <= 4 for b in batches)
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 10 and set(table.column("label").to_pylist()) == {"a", "b"}
    assert {"tile_id", "view", "vector", "dataset", "slide", "label"} <= set(table.column_names)
    assert "pixels" not in table.column_names


def test_where_task_columns_and_count(store):
    query = store.embeddings(FAST)
    assert query.count() == 13
    assert query.where("dataset = 'unlabelled'").count() == 3
    assert query.task("t").count() == 10
    assert query.task("t").where("dataset = 'unlabelled'").count() == 0
    frame = query.columns("dataset").to_polars()
    assert frame.shape == (13, 4) and frame.columns == ["tile_id", "view", "vector", "dataset"]
    X, ids, labels = query.task("t").to_numpy()
    assert X.shape == (10, 51) and X.dtype == np.float32 and len(ids) == 10 and len(labels) == 10
    assert query.to_numpy().labels is None
    assert query.where("dataset = 'tiles_0'").where("image LIKE 'a/%'").count() == 5


def test_views_and_versions(store):
    embed(store.catalog, FAST, views=2, augment="flip", **OPTS)
    query = store.embeddings(FAST)
    assert query.count() == 13  # view 0 by default
    assert query.views(1, 2).count() == 26 and query.all_views().count() == 39
    views = query.all_views().to_polars()["view"].value_counts().sort("view")["count"].to_list()
    assert views == [13, 13, 13]
    store.tag("emb__handcrafted_color_texture", "views-done")
    store.catalog.delete("emb__handcrafted_color_texture", "view = 2")
    assert query.all_views().count() == 26
    assert query.all_views().at("views-done").count() == 39
    first = store.versions("emb__handcrafted_color_texture")[0]["version"]
    assert query.at(first).count() == 0  # the table was created empty, then filled


def test_queries_are_immutable_and_explicit(store):
    base = store.embeddings(FAST)
    refined = base.where("dataset = 'unlabelled'").task("t")
    assert base.predicates == () and base.task_name is None and refined is not base
    assert isinstance(refined, EmbeddingQuery)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda s: s.embeddings("resnet50.random"), "no embeddings for 'resnet50.random'"),
        (lambda s: s.embeddings(""), "--backbone '' must be a non-empty name"),
        (lambda s: s.embeddings(FAST).task("nope").count(), "no labels for task 'nope'; tasks: t"),
        (lambda s: s.embeddings(FAST).task(""), "--task '' must be a non-empty name"),
        (lambda s: s.embeddings(FAST).where("nonsense ==="), "is not a filter over the tile columns"),
        (lambda s: s.embeddings(FAST).views(-1), "view -1 must be an integer >= 0"),
        (lambda s: s.embeddings(FAST).at(99), "has no version 99"),
        (lambda s: s.embeddings(FAST).columns("pixels"), "unknown tile column 'pixels'"),
        (lambda s: list(s.embeddings(FAST).to_batches(batch_size=0)), "batch_size 0 must be an integer >= 1"),
    ],
)
def test_bad_queries_are_one_line_errors(store, build, message):
    with pytest.raises(EmbedstoreError, match=None) as caught:
        build(store)
    assert message in str(caught.value) and "\n" not in str(caught.value)
