"""Label-free indicators: RankMe, view consistency and slide clustering on arrays and on a real store."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from embedstore.core.errors import EmbedstoreError
from embedstore.embed.writer import EmbeddingWriter
from embedstore.evaluate.neighbours import sample_queries
from embedstore.probe.indicators import (
    backbone_indicators,
    rankme,
    slide_clustering,
    view_consistency,
)
from embedstore.storage.embedding_tables import recorded_provenance, table_name
from tests.helpers import vector_store

KEY = "synthetic.vectors"


# -- RankMe ------------------------------------------------------------------------------------------


def test_rankme_separates_full_rank_from_low_rank():
    rng = np.random.default_rng(0)
    isotropic = rng.normal(size=(2000, 64)).astype(np.float32)
    low = (rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 64))).astype(np.float32)
    assert rankme(isotropic) > 55
    assert 1 <= rankme(low) < 6
    assert rankme(rng.normal(size=(10, 64))) <= 10  # never above min(rows, dim)


def test_rankme_follows_the_paper_on_raw_vectors():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 20)) * np.linspace(0.5, 4, 20) + 1.0
    s = np.linalg.svd(X, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(X) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    # Not centred: a large shared component (as in histology embeddings) counts as one dominant direction.
    shared = 10.0 + 0.1 * rng.normal(size=(2000, 64))
    assert rankme(shared) < 5 < 55 < rankme(shared - shared.mean(axis=0))


def test_rankme_is_deterministic_and_subsamples_by_seed():
    X = np.random.default_rng(1).normal(size=(3000, 32)) * np.linspace(0.1, 3, 32)
    assert rankme(X, max_rows=500) == rankme(X, max_rows=500)
    assert rankme(X, max_rows=500, seed=0) != rankme(X, max_rows=500, seed=1)
    assert rankme(X, max_rows=500) == rankme(X[sample_queries(3000, 500, 0)])


# -- view consistency --------------------------------------------------------------------------------


def tiles_with_views(tiles: int, views: int, noise: float | None, seed: int = 0):
    """(X, tile_ids, views): each tile's views are it plus `noise`, or independent random vectors (None)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(tiles, 32))
    X = [base] + [
        base + noise * rng.normal(size=base.shape) if noise is not None else rng.normal(size=base.shape)
        for _ in range(views - 1)
    ]
    ids = np.array([f"t{i}" for i in range(tiles)] * views, dtype=object)
    return np.concatenate(X).astype(np.float32), ids, np.repeat(np.arange(views), tiles)


def test_views_close_to_their_tile_are_consistent():
    result = view_consistency(*tiles_with_views(300, 3, noise=0.05))
    assert result.same_tile >= 0.99
    assert result.chance == pytest.approx(2 / 899)
    assert (result.rows, result.tiles, result.tiles_with_views, result.queries) == (900, 300, 300, 900)


def test_random_views_are_consistent_only_by_chance():
    # 900 queries at chance 2/899: ~2 hits expected (sd ~1.4); 0.01 allows 9, five sd away.
    result = view_consistency(*tiles_with_views(300, 3, noise=None))
    assert abs(result.same_tile - result.chance) < 0.01


def test_view_consistency_chance_counts_views_per_tile_and_none_without_views():
    X = np.random.default_rng(2).normal(size=(6, 8)).astype(np.float32)
    ids = np.array(["a", "a", "a", "b", "c", "c"], dtype=object)
    result = view_consistency(X, ids, np.array([0, 1, 2, 0, 0, 1]))
    assert result.chance == pytest.approx((3 * 2 + 1 * 0 + 2 * 1) / (6 * 5))
    assert view_consistency(X, np.array(list("abcdef"), dtype=object), np.zeros(6, int)) is None
    sampled = view_consistency(*tiles_with_views(300, 3, noise=0.05), max_queries=100)
    assert sampled.queries == 100 and sampled.same_tile >= 0.97


# -- slide clustering --------------------------------------------------------------------------------


def slide_vectors(slides: int, per_slide: int, offset: float, seed: int = 0):
    """Random content vectors plus a slide-specific offset of length ~`offset`; (X, slide names)."""
    rng = np.random.default_rng(seed)
    slide = np.repeat(np.arange(slides), per_slide)
    directions = rng.normal(size=(slides, 32)) / np.sqrt(32)
    X = rng.normal(size=(len(slide), 32)) + offset * directions[slide]
    return X.astype(np.float32), np.array([f"s{s}" for s in slide], dtype=object)


def test_slide_offsets_are_flagged_as_a_batch_effect():
    X, slides = slide_vectors(8, 150, offset=8.0)
    result = slide_clustering(X, slides, k=10)
    assert result.chance == pytest.approx(149 / 1199)
    assert result.same_slide >= 0.9 and result.ratio > 5
    assert result.warning is not None and "same slide" in result.warning


def test_random_slides_cluster_at_chance_without_warning():
    # Slides drawn independently of the vectors: each neighbour is same-slide with p ~ chance (~0.25).
    # 1200 queries x 10 neighbours give a standard error ~0.004 (x sqrt(10) = 0.013 if the overlapping
    # neighbour lists were fully dependent); 0.03 is over two of those worst-case errors.
    rng = np.random.default_rng(3)
    X, _ = slide_vectors(1, 1200, offset=0.0)
    slides = np.array([f"s{s}" for s in rng.integers(0, 4, len(X))], dtype=object)
    result = slide_clustering(X, slides, k=10)
    assert abs(result.same_slide - result.chance) < 0.03
    assert result.warning is None and abs(result.excess) < 0.05


def test_slide_chance_and_neighbours_match_brute_force():
    rng = np.random.default_rng(4)
    slides = np.array(["a", "a", "a", "b", "b", "c", "d", "d"], dtype=object)
    X = rng.normal(size=(len(slides), 6)).astype(np.float32) + 2.0
    pairs = [(i, j) for i, j in itertools.permutations(range(len(slides)), 2)]
    chance = sum(slides[i] == slides[j] for i, j in pairs) / len(pairs)
    centred = X - X.mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :3]
    same = np.mean(slides[nearest] == slides[:, None])
    result = slide_clustering(X, slides, k=3)
    assert result.chance == pytest.approx(chance) and result.same_slide == pytest.approx(same)
    assert (result.k, result.slides, result.rows, result.queries) == (3, 4, 8, 8)


def test_slide_clustering_samples_queries_and_needs_two_slides():
    X, slides = slide_vectors(3, 100, offset=0.0)
    slides[:150] = "big"  # sizes 150, 50, 100: the chance depends on which rows are queried
    result = slide_clustering(X, slides, k=5, max_queries=40, seed=7)
    queried = slides[sample_queries(300, 40, 7)]
    sizes = {"big": 150, "s1": 50, "s2": 100}
    assert result.queries == 40
    assert result.chance == pytest.approx(np.mean([(sizes[s] - 1) / 299 for s in queried]))
    assert slide_clustering(X, np.full(300, "one", dtype=object), k=5) is None
    unknown = slides.copy()
    unknown[:10] = None  # tiles without a slide are left out
    assert slide_clustering(X, unknown, k=5).rows == 290


# -- one backbone of a real store --------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    """240 tiles on 4 slides (tile i on slide i % 4) with a slide offset; tiles 0..59 have views 1 and 2."""
    rng = np.random.default_rng(5)
    offsets = rng.normal(size=(4, 16)) * 2
    X = (rng.normal(size=(240, 16)) + offsets[np.arange(240) % 4]).astype(np.float32)
    store = vector_store(tmp_path / "store", X, slides=4, key=KEY)
    name = table_name(KEY)
    writer = EmbeddingWriter(
        store.catalog, name, recorded_provenance(store.catalog.dataset(name).schema, name), views=2
    )
    ids = [f"t{i:06d}" for i in range(60)] * 2
    views = np.repeat([1, 2], 60)
    writer.write(ids, views, np.concatenate([X[:60], X[:60]]) + 0.05 * rng.normal(size=(120, 16)))
    return store


def test_backbone_indicators_equal_the_array_functions(store):
    arrays = store.embeddings(KEY).all_views().columns("slide").to_arrow()
    X = np.stack(arrays.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    ids = arrays.column("tile_id").to_numpy(zero_copy_only=False)
    views = arrays.column("view").to_numpy()
    slides = np.asarray(arrays.column("slide").to_pylist(), dtype=object)
    first = views == 0

    result = backbone_indicators(store.embeddings(KEY), k=5)
    assert (result.dim, result.rows, result.rows_total) == (16, 240, 240)
    assert result.rankme == pytest.approx(rankme(X[first]))
    assert result.view_consistency == view_consistency(X, ids, views)
    assert result.view_consistency.rows == 360 and result.view_consistency.tiles_with_views == 60
    assert result.slide_clustering == slide_clustering(X[first], slides[first], k=5)
    assert result.slide_clustering.slides == 4
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()


def test_backbone_indicators_sample_whole_tiles_and_keep_filters(store):
    sampled = backbone_indicators(store.embeddings(KEY), max_tiles=100)
    assert sampled == backbone_indicators(store.embeddings(KEY), max_tiles=100)
    assert 60 <= sampled.rows <= 140 and sampled.rows_total == 240  # ~100 kept, sd ~8
    views = sampled.view_consistency
    assert views.rows - sampled.rows == 2 * views.tiles_with_views  # a kept tile brings both its views
    one_slide = backbone_indicators(store.embeddings(KEY).where("slide = 'slide0'"))
    assert one_slide.rows == 60 and one_slide.slide_clustering is None
    with pytest.raises(EmbedstoreError, match="no vectors"):
        backbone_indicators(store.embeddings(KEY).where("slide = 'nowhere'"))
