"""The query check: a planted outlier among the positives is named (and dropped on request), an incoherent
set is called so, a coherent set gets no warning; from Python and from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import embedstore
from embedstore.search.query_check import INCOHERENT_SHARE, OUTLIER_SHARE
from tests.cli.test_cli import run
from tests.helpers import vector_store

KEY = "synthetic.vectors"
CLUSTERS = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[embedstore.Store, np.ndarray]:
    """1,200 vectors in 8 tight clusters (tile i is in cluster i % 8) over a shared offset, as real
    embeddings have; a flat index."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(CLUSTERS, 32))
    cluster = np.arange(1200) % CLUSTERS
    vectors = (3.0 + centres[cluster] + 0.4 * rng.normal(size=(1200, 32))).astype(np.float32)
    store = vector_store(tmp_path_factory.mktemp("check") / "store", vectors)
    store.index(KEY, kind="flat")
    return store, cluster


def tiles_of(cluster: np.ndarray, which: int, n: int) -> list[str]:
    return [f"t{i:06d}" for i in np.flatnonzero(cluster == which)[:n]]


def test_a_coherent_set_gets_no_warning(data):
    store, cluster = data
    result = store.search(KEY, tiles=tiles_of(cluster, 2, 5), k=20)
    check = result.query_check
    assert check.warning() is None and not check.incoherent and not check.outliers
    assert len(check.positives) == 5 and all(p.share < 1 / CLUSTERS for p in check.positives)
    # each ranks within its own cluster (an eighth of the data) by the others' query
    assert "warning" not in result.summary() and "agree" in check.summary()


def test_a_planted_outlier_is_named_and_dropped_on_request(data):
    store, cluster = data
    positives = tiles_of(cluster, 2, 4)
    planted = tiles_of(cluster, 5, 1)[0]
    result = store.search(KEY, tiles=[*positives, planted], k=40)
    check = result.query_check
    assert [p.name for p in check.outliers] == [planted]
    assert next(p for p in check.positives if p.name == planted).share > OUTLIER_SHARE
    warning = check.warning()
    assert warning is not None and planted in warning and "--drop-outliers" in warning
    assert "\n" not in warning and f"warning: {warning}" in result.summary()
    record = result.to_dict()["query_check"]
    assert record["outliers"] == [planted] and record["warning"] == warning and record["dropped"] == []
    assert "outlier positive(s)" in result.summary()

    dropped = store.search(KEY, tiles=[*positives, planted], k=40, drop_outliers=True)
    assert dropped.query_check.dropped == [planted] and "searched without" in dropped.query_check.warning()
    hits = dropped.hits["tile_id"].to_list()
    assert hits == store.search(KEY, tiles=positives, k=40).hits["tile_id"].to_list()  # as if never given
    assert all(cluster[int(t[1:])] == 2 for t in hits)


def test_an_incoherent_set_is_called_so_and_nothing_is_dropped(data):
    store, cluster = data
    spread = [tiles_of(cluster, c, 1)[0] for c in range(4)]  # one tile from each of 4 clusters
    result = store.search(KEY, tiles=spread, k=10, drop_outliers=True)
    check = result.query_check
    assert check.incoherent and check.median_share is not None and check.median_share > INCOHERENT_SHARE
    assert "incoherent" in (check.warning() or "")
    assert len(check.dropped) < 4  # never all of them


def test_one_positive_is_not_checked(data):
    store, cluster = data
    check = store.search(KEY, tiles=tiles_of(cluster, 1, 1), k=5).query_check
    assert check.warning() is None and not check.checked


def test_the_cli_warns_in_one_line_and_drops_on_request(data):
    store, cluster = data
    planted = tiles_of(cluster, 5, 1)[0]
    args = ["search", store.root, "--backbone", KEY, "-k", "10"]
    for tile in [*tiles_of(cluster, 2, 4), planted]:
        args += ["--tile", tile]
    warned = run(*args)
    assert warned.exit_code == 0, warned.output
    warnings = [line for line in warned.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and planted in warnings[0]
    assert warned.stderr.splitlines()[-1].startswith("10 hit(s) from index 'flat'")
    dropped = run(*args, "--drop-outliers", "--json")
    assert dropped.exit_code == 0 and f"searched without {planted}" in dropped.stderr
    assert all(cluster[int(h["tile_id"][1:])] == 2 for h in json.loads(dropped.stdout))
