"""Searching: exact results, fusion, negatives, filters, queries by tile / vector / image, export."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import embedstore
from embedstore.core.errors import EmbedstoreError
from embedstore.core.schema import LABELS
from embedstore.embed.local import embed
from embedstore.search.space import VectorSpace
from tests.helpers import clustered_vectors, vector_store, write_tiles

KEY = "synthetic.vectors"


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(2000, dim=24, clusters=12, seed=3)


@pytest.fixture
def store(tmp_path, vectors) -> embedstore.Store:
    store = vector_store(tmp_path / "store", vectors)
    store.index(KEY, kind="flat")
    return store


def ids_of(result) -> list[str]:
    return result.hits["tile_id"].to_list()


def brute_force(vectors: np.ndarray, query_rows: list[int], k: int) -> list[str]:
    """Top k by centred cosine to the mean of the queries, computed here with NumPy."""
    centred = vectors - vectors.mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    query = unit[query_rows].mean(axis=0)
    scores = unit @ (query / np.linalg.norm(query))
    scores[query_rows] = -np.inf
    return [f"t{i:06d}" for i in np.argsort(-scores, kind="stable")[:k]]


def test_exact_search_matches_numpy_brute_force(store, vectors):
    result = store.search(KEY, tiles=["t000005", "t000011"], k=25)
    assert ids_of(result) == brute_force(vectors, [5, 11], 25)
    assert result.hits["rank"].to_list() == list(range(1, 26))
    assert (np.diff(result.hits["score"].to_numpy()) <= 1e-6).all()
    assert {"tile_id", "score", "rank", "slide", "source_id", "x", "y", "dataset"} <= set(result.hits.columns)


def test_raw_cosine_differs_from_centred(tmp_path, vectors):
    store = vector_store(tmp_path / "raw", vectors)
    store.index(KEY, kind="flat", center=False)
    raw = store.search(KEY, tiles=["t000005"], k=25, center="index")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ unit[5]
    scores[5] = -np.inf
    assert ids_of(raw) == [f"t{i:06d}" for i in np.argsort(-scores, kind="stable")[:25]]
    assert raw.centring == "none" and "built uncentred" in raw.described()
    assert VectorSpace.fit("cosine", False, vectors).mean is None
    pooled = store.search(KEY, tiles=["t000005"], k=25)  # the default re-centres the uncentred index
    assert ids_of(pooled) == brute_force(vectors, [5], 25) and pooled.centring == "pool"


def test_query_by_vectors_equals_query_by_tile(store, vectors):
    by_tile = store.search(KEY, tiles=["t000042"], k=10)
    by_vector = store.search(KEY, vectors=vectors[42], k=11)
    assert ids_of(by_vector)[0] == "t000042" and ids_of(by_vector)[1:] == ids_of(by_tile)


def test_rrf_fuses_the_neighbours_of_each_positive(store, vectors):
    mean = store.search(KEY, tiles=["t000001", "t000002"], k=30)
    rrf = store.search(KEY, tiles=["t000001", "t000002"], k=30, fusion="rrf")
    near_each = [set(ids_of(store.search(KEY, tiles=[t], k=5))) for t in ("t000001", "t000002")]
    assert rrf.hits.height == 30 and set(ids_of(rrf)).isdisjoint({"t000001", "t000002"})
    assert all(near <= set(ids_of(rrf)) for near in near_each)  # both positives' own neighbours kept
    assert ids_of(mean) != ids_of(rrf)


def test_negatives_lower_the_rank_of_tiles_near_them(store):
    plain = store.search(KEY, tiles=["t000007"], k=200)
    negative = ids_of(plain)[0]  # the best hit turns out to be a false positive
    near_negative = set(ids_of(store.search(KEY, tiles=[negative], k=20)))
    pushed = store.search(KEY, tiles=["t000007"], negatives=[negative], k=200)
    assert negative not in ids_of(pushed)

    def mean_rank(result) -> float:
        ranks = [r for t, r in zip(ids_of(result), result.hits["rank"], strict=True) if t in near_negative]
        return float(np.mean(ranks + [201] * (len(near_negative) - len(ranks))))

    assert mean_rank(pushed) > mean_rank(plain) + 10


def test_exclude_query_slides(store):
    result = store.search(KEY, tiles=["t000004", "t000009"], k=100, exclude_query_slides=True)
    assert set(result.hits["slide"]) == {"slide2", "slide3"}  # t000004: slide0, t000009: slide1
    assert result.hits.height == 100


def test_exclude_labelled_tiles_of_a_task(store, tmp_path):
    before = ids_of(store.search(KEY, tiles=["t000003"], k=10))
    labels = tmp_path / "labels.csv"
    pl.DataFrame({"tile_id": before[:4], "label": ["pos"] * 4}).write_csv(labels)
    store.import_labels("mitosis", labels)
    after = store.search(KEY, tiles=["t000003"], k=10, exclude_task="mitosis")
    assert set(ids_of(after)).isdisjoint(before[:4]) and ids_of(after)[:6] == before[4:]


def test_where_restricts_to_tiles_passing_sql(store):
    result = store.search(KEY, tiles=["t000003"], k=50, where="dataset = 'even'")
    assert set(result.hits["dataset"]) == {"even"} and result.hits.height == 50
    few = store.search(KEY, tiles=["t000003"], k=5, where="tile_id IN ('t001998', 't001999')")
    assert sorted(ids_of(few)) == ["t001998", "t001999"]  # a narrow filter scans what it allows
    assert any("only 2 tiles pass" in note for note in few.notes)


def test_export_round_trips_through_labels_import(store, tmp_path):
    result = store.search(KEY, tiles=["t000003"], k=15)
    path = result.export_labels(tmp_path / "candidates.csv", label="candidate")
    assert store.import_labels("candidates", path).labels_written == 15
    labels = store.catalog.read(LABELS, filter="task = 'candidates'")
    assert sorted(labels.column("tile_id").to_pylist()) == sorted(ids_of(result))
    assert set(labels.column("label").to_pylist()) == {"candidate"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tiles": ["nope"]}, "--tile 'nope': no such tile"),
        ({"tiles": ["t000001"], "negatives": ["nope"]}, "--negative 'nope': no such tile"),
        ({"vectors": np.zeros((2, 5), np.float32)}, r"--vectors has shape \(2, 5\).*24-d"),
        ({"vectors": np.full(24, np.nan, np.float32)}, "NaN"),
        ({"tiles": ["t000001"], "k": 5000}, "-k 5000 is more than the 2000 vectors.*-k 2000"),
        ({"tiles": ["t000001"], "k": 0}, "-k 0 must be an integer >= 1"),
        ({"tiles": ["t000001"], "where": "no_such_column = 1"}, "--where"),
        ({"tiles": ["t000001"], "fusion": "max"}, "--fusion 'max' must be one of"),
        ({}, "nothing to search with"),
    ],
)
def test_bad_queries_are_one_line_errors(store, kwargs, message):
    with pytest.raises(EmbedstoreError, match=message) as caught:
        store.search(KEY, **kwargs)
    assert "\n" not in str(caught.value)


def test_a_tile_without_a_vector_is_named(store, tmp_path):
    store.ingest([write_tiles(tmp_path / "later", 2, 1)], progress=False)
    new_tile = next(t for t in store.catalog.tile_ids() if not t.startswith("t0"))
    with pytest.raises(
        EmbedstoreError, match="has no vector in emb__synthetic_vectors; run `embedstore embed"
    ):
        store.search(KEY, tiles=[new_tile], k=3)


def test_search_without_an_index_builds_one_and_says_so(tmp_path, vectors):
    store = vector_store(tmp_path / "fresh", vectors[:300])
    result = store.search(KEY, tiles=["t000001"], k=3)
    assert any("no index yet: built index 'auto'" in note for note in result.notes)
    assert [m.name for m in store.indexes(KEY)] == ["auto"]


def test_image_queries_are_embedded_like_the_tiles(tmp_path):
    """A real backbone over real pixels: an image file of a stored tile finds that tile first."""
    folder = write_tiles(tmp_path / "tiles", 12, 4, side=48)
    store = embedstore.init(tmp_path / "img")
    store.ingest([folder], progress=False)
    embed(store.catalog, "handcrafted.color_texture", progress=False, workers=0, batch_size=8)
    image = sorted(folder.rglob("*.png"))[3]
    result = store.search("handcrafted.color_texture", images=[image], k=3)
    first = result.hits.row(0, named=True)
    assert first["image"].endswith(image.name) and first["score"] > 0.99
    assert result.query_images[0][0] == image.name and result.query_images[0][1].shape[2] == 3
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(EmbedstoreError, match="broken.png: not a readable image"):
        store.search("handcrafted.color_texture", images=[broken], k=3)
