"""Indexes: recall of each kind against exact search, binding to table versions, updates, refusals."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import embedstore
from embedstore.core.errors import EmbedstoreError
from embedstore.core.schema import TILES, TILES_SCHEMA
from embedstore.embed.writer import EmbeddingWriter
from embedstore.search import IvfConfig, LanceConfig, StaleIndexError
from embedstore.search.recall import exact_neighbours, recall_at_k
from embedstore.storage.embedding_tables import recorded_provenance, table_name
from tests.helpers import clustered_vectors, vector_store

KEY = "synthetic.vectors"
TABLE = table_name(KEY)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(3000, dim=32, clusters=30)


@pytest.fixture
def store(tmp_path, vectors) -> embedstore.Store:
    return vector_store(tmp_path / "store", vectors)


def held_out_recall(store: embedstore.Store, name: str, vectors: np.ndarray) -> float:
    """recall@10 of the raw index for noisy copies of stored vectors (not stored rows themselves)."""
    searcher = store.searcher(KEY, name)
    queries = vectors[:200] + np.random.default_rng(1).normal(0, 0.05, (200, vectors.shape[1]))
    prepared_queries = searcher.loaded.space.prepare(queries.astype(np.float32))
    stored = searcher.loaded.space.prepare(vectors)
    truth = exact_neighbours(stored, prepared_queries, "cosine", 10)
    return recall_at_k(searcher.loaded.backend.search(prepared_queries, 10), truth)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_each_faiss_kind_reaches_the_recall_target_on_held_out_queries(store, vectors, kind):
    manifest = store.index(KEY, kind=kind)
    assert manifest.kind == kind and manifest.rows == 3000 and manifest.table == TABLE
    if kind == "flat":
        assert manifest.recall_at_10 is None  # exact: nothing to measure
    else:
        assert manifest.recall_at_10 >= 0.95 and manifest.recall_queries == 500
    assert held_out_recall(store, kind, vectors) >= (0.999 if kind == "flat" else 0.9)


def test_lancedb_backend_behind_the_same_api(store, vectors):
    manifest = store.index(KEY, backend="lancedb", config=LanceConfig(num_partitions=8))
    assert manifest.backend == "lancedb" and manifest.name == "auto-lancedb"
    assert manifest.recall_at_10 >= 0.95
    assert held_out_recall(store, "auto-lancedb", vectors) >= 0.9
    hits = store.search(KEY, tiles=["t000007"], k=5, index="auto-lancedb").hits
    assert hits.height == 5 and "t000007" not in hits["tile_id"].to_list()


def test_auto_is_exact_when_small_and_approximate_with_refine_when_large(store, monkeypatch):
    assert store.index(KEY).kind == "flat"
    monkeypatch.setattr("embedstore.search.configs.EXACT_BELOW", 1000)
    manifest = store.index(KEY, name="big")
    assert manifest.kind == "ivfpq" and manifest.config["refine_factor"] >= 1
    assert manifest.recall_at_10 >= 0.95


def test_manifest_records_the_table_version_rows_parameters_and_time(store):
    manifest = store.index(KEY, kind="ivf", config=IvfConfig(nlist=16))
    version = store.catalog.dataset(TABLE).version
    listed = store.indexes(KEY)
    assert [m.name for m in listed] == ["ivf"]
    saved = listed[0]
    assert saved.table_version == version == manifest.built_from_version and saved.rows == 3000
    assert saved.config["nlist"] == 16 and saved.build_seconds > 0 and saved.dim == 32
    assert saved.backbone == KEY and saved.metric == "cosine" and saved.center


def test_results_are_identical_after_reopening_the_store(store, tmp_path):
    store.index(KEY, kind="hnsw")
    first = store.search(KEY, tiles=["t000010", "t000020"], k=20).hits
    again = embedstore.open(tmp_path / "store").search(KEY, tiles=["t000010", "t000020"], k=20).hits
    assert first["tile_id"].to_list() == again["tile_id"].to_list()
    assert np.allclose(first["score"].to_numpy(), again["score"].to_numpy())


def add_rows(store: embedstore.Store, vectors: np.ndarray, start: int) -> list[str]:
    """More tiles and their vectors, as a later ingest + embed would add them."""
    ids = [f"t{start + i:06d}" for i in range(len(vectors))]
    rows = [{"tile_id": t, "source_id": "src9", "slide": "slide9", "x": 0, "y": 0} for t in ids]
    store.catalog.insert_missing(TILES, pa.Table.from_pylist(rows, schema=TILES_SCHEMA))
    provenance = recorded_provenance(store.catalog.dataset(TABLE).schema, TABLE)
    EmbeddingWriter(store.catalog, TABLE, provenance).write(ids, np.zeros(len(ids), np.int16), vectors)
    return ids


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_rows_embedded_later_are_added_to_the_index(store, vectors, kind):
    store.index(KEY, kind=kind)
    rng = np.random.default_rng(5)
    new = (vectors[100] + rng.normal(0, 0.001, (5, 32))).astype(np.float32)  # near-copies of t000100
    ids = add_rows(store, new, 3000)
    hits = store.search(KEY, tiles=[ids[0]], k=5, index=kind)
    assert sorted(hits.hits["tile_id"].to_list()) == sorted([*ids[1:], "t000100"])
    assert any("added 5 rows" in note for note in hits.notes)
    manifest = store.indexes(KEY)[0]
    assert manifest.rows == 3005 and manifest.rows_added == 5
    assert manifest.table_version == store.catalog.dataset(TABLE).version
    reopened = embedstore.open(store.root).search(KEY, tiles=[ids[0]], k=5, index=kind)
    assert reopened.hits["tile_id"].to_list() == hits.hits["tile_id"].to_list()  # the update was saved
    assert not reopened.notes


def test_a_stale_index_is_refused_without_updates_and_when_rows_are_gone(store, vectors):
    store.index(KEY, kind="flat")
    add_rows(store, vectors[:3], 5000)
    with pytest.raises(StaleIndexError, match="3 new rows.*embedstore index"):
        store.search(KEY, tiles=["t000001"], k=3, update=False)
    store.index(KEY, kind="flat")  # rebuilt: fresh again
    assert store.search(KEY, tiles=["t000001"], k=3, update=False).hits.height == 3
    store.catalog.delete(TABLE, "tile_id IN ('t000002', 't000003')")
    with pytest.raises(StaleIndexError, match=r"2 of its rows are gone.*embedstore index .* --name flat"):
        embedstore.open(store.root).search(KEY, tiles=["t000001"], k=3)


def test_compaction_alone_does_not_make_an_index_stale(store):
    store.index(KEY, kind="flat")
    store.compact(older_than="0s")
    result = embedstore.open(store.root).search(KEY, tiles=["t000001"], k=3, update=False)
    assert result.hits.height == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ivf", "config": IvfConfig(nlist=5000)}, "5000 lists needs at least 5000 vectors"),
        ({"kind": "flat", "backend": "lancedb"}, "--backend lancedb builds"),
        ({"backend": "faiss", "config": LanceConfig()}, "does not fit --backend faiss"),
    ],
)
def test_bad_index_requests_are_one_line_errors_and_write_nothing(store, kwargs, message):
    with pytest.raises(EmbedstoreError, match=message):
        store.index(KEY, **kwargs)
    assert store.indexes(KEY) == []


def test_clustered_kinds_refuse_tables_too_small_to_train(tmp_path):
    small = vector_store(tmp_path / "small", clustered_vectors(300, dim=16))
    with pytest.raises(EmbedstoreError, match="needs at least 1000.*--kind flat"):
        small.index(KEY, kind="ivfpq")
    assert small.index(KEY, kind="hnsw").rows == 300  # a graph needs no training


def test_an_index_of_another_backbone_or_name_is_refused(store, vectors):
    store.index(KEY, kind="flat", name="mine")
    other = vector_store(store.root.parent / "other", vectors[:50], key="other.vectors")
    with pytest.raises(EmbedstoreError, match="no index 'mine' for emb__other_vectors"):
        other.search("other.vectors", tiles=["t000001"], k=3, index="mine")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_few_query_flat_scans_through_blas_match_faiss_exactly(metric):
    from embedstore.search.configs import FlatConfig
    from embedstore.search.faiss_index import PARALLEL_FROM, FaissIndex

    rng = np.random.default_rng(3)
    stored = rng.standard_normal((2000, 24)).astype(np.float32)
    index = FaissIndex.build(FlatConfig(), stored, metric, device="cpu")
    index.add(stored[:7] + 0.5)  # rows added later are scanned too
    for count in (1, PARALLEL_FROM - 1):
        queries = rng.standard_normal((count, 24)).astype(np.float32)
        _, expected = index.index.search(queries, 10)
        assert np.array_equal(index.search(queries, 10), expected)
    padded = index.search(stored[:1], index.rows + 3)
    assert sorted(padded[0, : index.rows]) == list(range(index.rows))
    assert list(padded[0, index.rows :]) == [-1, -1, -1]
