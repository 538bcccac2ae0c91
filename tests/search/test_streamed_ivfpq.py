"""IVF-PQ built from vectors streamed out of the table: recall after exact re-scoring, batched reads,
sizes recorded, incremental updates equal to a rebuild, row addresses followed through a compaction."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import embedstore
from embedstore.embeddings import EmbeddingQuery, EmbeddingTable
from embedstore.search import IvfPqConfig, streamed_ivfpq
from embedstore.search.faiss_index import FaissIndex
from embedstore.search.recall import exact_neighbours, recall_at_k
from embedstore.storage.embedding_tables import table_name
from tests.helpers import clustered_vectors, vector_store
from tests.search.test_indexes import add_rows

KEY = "synthetic.vectors"
TABLE = table_name(KEY)
ROWS, DIM = 20_000, 64
CONFIG = IvfPqConfig(nlist=64, m=16)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(ROWS, dim=DIM, clusters=200, spread=0.5)


@pytest.fixture(scope="module")
def built(tmp_path_factory, vectors):
    """One store with an ivfpq index built in batches of 2048 rows, and what the build read."""
    store = vector_store(tmp_path_factory.mktemp("streamed") / "store", vectors)
    reads: list[int] = []
    takes: list[int] = []
    patch = pytest.MonkeyPatch()
    batches = EmbeddingQuery.to_numpy_batches
    take = EmbeddingTable.take

    def counted_batches(self, batch_size=8192, row_address=False):
        for batch in batches(self, batch_size, row_address):
            reads.append(len(batch.X))
            yield batch

    def counted_take(self, addresses):
        takes.append(len(addresses))
        return take(self, addresses)

    def whole(*_, **__):
        raise AssertionError("the streamed build read the whole table at once")

    patch.setattr(streamed_ivfpq, "BATCH_ROWS", 2048)
    patch.setattr(EmbeddingQuery, "to_numpy_batches", counted_batches)
    patch.setattr(EmbeddingTable, "take", counted_take)
    patch.setattr(EmbeddingQuery, "to_numpy", whole)
    patch.setattr(EmbeddingQuery, "to_arrow", whole)
    try:
        manifest = store.index(KEY, kind="ivfpq", config=CONFIG)
    finally:
        patch.undo()
    return store, manifest, reads, takes


def test_recall_after_exact_rescoring_reaches_the_target(built, vectors):
    store, manifest, _, _ = built
    assert manifest.kind == "ivfpq" and manifest.rows == ROWS and manifest.recall_at_10 >= 0.95
    searcher = store.searcher(KEY, "ivfpq")
    backend = searcher.loaded.backend
    assert isinstance(backend, FaissIndex) and backend.codes_only
    assert not isinstance(backend.index, faiss.IndexRefine)  # no exact vector held in memory
    space = searcher.loaded.space
    stored = vectors[[int(t[1:]) for t in searcher.loaded.tile_ids]]  # in index order (tile t<i>: row i)
    rng = np.random.default_rng(3)
    rows = rng.choice(ROWS, 1000, replace=False)
    queries = space.prepare(stored[rows] + rng.normal(0, 0.1, (1000, DIM)).astype(np.float32))
    truth = exact_neighbours(space.prepare(stored), queries, "cosine", 10)
    assert recall_at_k(backend.search(queries, 10), truth) >= 0.95
    np.testing.assert_allclose(backend.vectors(rows[:5]), space.prepare(stored[rows[:5]]), atol=1e-6)


def test_the_build_reads_batches_and_only_the_sampled_rows(built):
    _, _, reads, takes = built
    assert sum(reads) == 2 * ROWS  # two passes: ids and mean, then encoding
    assert max(reads) <= 2048
    assert max(takes) < ROWS  # the training sample, the recall queries, re-scored candidates


def test_sizes_are_recorded_and_the_index_is_much_smaller_than_the_vectors(built):
    store, manifest, _, _ = built
    assert 0 < manifest.index_bytes < ROWS * DIM * 4 / 4
    assert 0 < manifest.memory_bytes < ROWS * DIM * 4 / 4
    assert "on disk" in manifest.summary() and "in memory" in manifest.summary()
    assert store.indexes(KEY)[0].index_bytes == manifest.index_bytes
    [listed] = store.info()["indexes"]
    assert (listed["index_bytes"], listed["memory_bytes"]) == (manifest.index_bytes, manifest.memory_bytes)


def test_incremental_updates_give_the_same_neighbours_as_a_rebuild(tmp_path, vectors):
    store = vector_store(tmp_path / "store", vectors[:15_000])
    store.index(KEY, kind="ivfpq", config=CONFIG)
    ids = add_rows(store, vectors[15_000:], 15_000)
    updated = store.searcher(KEY, "ivfpq")  # adds the 5,000 rows
    assert updated.manifest.rows == ROWS and updated.manifest.rows_added == len(ids)
    reopened = embedstore.open(store.root).searcher(KEY, "ivfpq", update=False)  # the update was saved
    incremental = reopened.loaded.backend
    assert isinstance(incremental, FaissIndex) and incremental.exact is not None
    # a rebuild with the same trained quantizer and codebooks: every row added again, in table order
    fresh = faiss.clone_index(incremental.index)
    fresh.reset()
    raw, _, _ = EmbeddingTable.of(store.catalog, TABLE).query().columns().to_numpy()
    fresh.add(reopened.loaded.space.prepare(raw))
    rebuilt = FaissIndex(fresh, incremental.config)
    rebuilt.read_exact_from(incremental.exact)
    queries = reopened.loaded.space.prepare(vectors[::40])
    np.testing.assert_array_equal(incremental.search(queries, 10), rebuilt.search(queries, 10))
    hits = reopened.search(tiles=[ids[0]], k=5).hits["tile_id"].to_list()
    assert len(hits) == 5


def test_row_addresses_follow_a_compaction(tmp_path, vectors):
    store = vector_store(tmp_path / "store", vectors[:4000])
    add_rows(store, vectors[4000:5000], 4000)  # a second fragment
    store.index(KEY, kind="ivfpq", config=IvfPqConfig(nlist=16, m=16))
    before = store.search(KEY, tiles=["t000001", "t004002"], k=10).hits["tile_id"].to_list()
    store.catalog.delete(TABLE, "tile_id = 't000000'")  # rewrites the first fragment's deletions
    store.compact(older_than="0s")
    with pytest.raises(embedstore.search.StaleIndexError):  # a row is gone: refused as for every kind
        embedstore.open(store.root).search(KEY, tiles=["t000001"], k=3)
    store.index(KEY, kind="ivfpq", config=IvfPqConfig(nlist=16, m=16))
    before = store.search(KEY, tiles=["t000001", "t004002"], k=10).hits["tile_id"].to_list()
    store.compact(older_than="0s")  # nothing deleted since: the fragments are rewritten, the rows kept
    after = embedstore.open(store.root).search(KEY, tiles=["t000001", "t004002"], k=10, update=False)
    assert after.hits["tile_id"].to_list() == before
