"""Every fold's neighbours at once equal a fold-by-fold exact search."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore.evaluate import neighbours
from embedstore.evaluate.neighbours import cross_fold_neighbours, exact_neighbours


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("chunks", [(2048, 8192), (7, 11)])  # one block per pair, and many small ones
def test_cross_fold_neighbours_equal_a_search_per_fold(monkeypatch, chunks):
    monkeypatch.setattr(neighbours, "CHUNK_ROWS", chunks[0])
    monkeypatch.setattr(neighbours, "CHUNK_COLUMNS", chunks[1])
    x = unit_rows(300, 24)
    fold_of = np.random.default_rng(1).integers(0, 4, size=len(x))
    tests = [np.flatnonzero(fold_of == f) for f in range(4)]  # uneven folds
    found = cross_fold_neighbours(x, tests, 9)
    for test, positions in zip(tests, found, strict=True):
        train = np.setdiff1d(np.arange(len(x)), test)
        expected = train[exact_neighbours(x[train], x[test], "cosine", 9)]
        assert positions.shape == (len(test), 9)
        assert np.array_equal(positions, expected)
        assert not np.isin(positions, test).any()  # never a row of its own fold


def test_cross_fold_neighbours_refuse_test_sets_that_do_not_partition_the_rows():
    x = unit_rows(20, 4)
    with pytest.raises(ValueError, match="partition"):
        cross_fold_neighbours(x, [np.arange(10), np.arange(5, 20)], 3)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("block", [1000, 37, 5])  # one block, many, and blocks smaller than k
def test_blocked_top_k_equals_one_exact_search(metric, block):
    x = unit_rows(1000, 16) * (1 if metric == "cosine" else np.arange(1, 1001)[:, None] / 500)
    queries = unit_rows(40, 16, seed=2)
    top = neighbours.BlockedTopK(queries, 11, metric)
    for first in range(0, len(x), block):
        top.offer(x[first : first + block], first)
    assert np.array_equal(top.positions(), exact_neighbours(x, queries, metric, 11))


def test_blocked_top_k_pads_with_minus_one_when_fewer_rows_are_offered():
    top = neighbours.BlockedTopK(unit_rows(3, 8), 5, "cosine")
    top.offer(unit_rows(2, 8, seed=1), 0)
    assert (top.positions()[:, 2:] == -1).all() and set(top.positions()[0, :2]) == {0, 1}
