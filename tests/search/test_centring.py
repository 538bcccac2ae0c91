"""Search centred on what is searched: --center pool | index | none on a store mixing two datasets."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

import embedstore
from embedstore.core.errors import EmbedstoreError
from embedstore.core.schema import TILES, TILES_SCHEMA
from embedstore.embed.writer import EmbeddingWriter
from embedstore.search.configs import LanceConfig
from embedstore.storage.embedding_tables import Provenance, table_name
from tests.cli.test_cli import run
from tests.helpers import vector_store

KEY = "synthetic.vectors"
N = 2000


def mixed_vectors(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Even tiles (dataset 'even') and odd tiles ('odd', shifted far along one axis); a rare positive
    class (~6 %) among the even tiles, offset along another axis. Returns vectors and the positive mask."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 16)).astype(np.float32)
    x[:, 0] += 4.0
    odd = np.arange(N) % 2 == 1
    x[odd, 1] += 30.0
    positive = ~odd & (rng.random(N) < 0.06)
    x[positive, 2] += 4.0
    return x, positive


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return mixed_vectors()


@pytest.fixture
def store(tmp_path, data) -> embedstore.Store:
    store = vector_store(tmp_path / "store", data[0])
    store.index(KEY, kind="flat")  # centred on the table's mean
    return store


def ids(result) -> list[str]:
    return result.hits["tile_id"].to_list()


def rows_of(tile_ids: list[str]) -> np.ndarray:
    return np.array([int(t[1:]) for t in tile_ids])


def numpy_search(vectors, queries, k, centre, rows=None) -> tuple[list[str], np.ndarray]:
    """Top k by cosine centred on `centre` (None: raw) to the mean of the queries' unit vectors."""
    rows = np.arange(len(vectors)) if rows is None else rows
    x = vectors.astype(np.float64) - (0 if centre is None else centre)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    query = unit[queries].mean(axis=0)
    scores = unit[rows] @ (query / np.linalg.norm(query))
    keep = ~np.isin(rows, queries)
    order = np.argsort(-scores[keep], kind="stable")[:k]
    return [f"t{i:06d}" for i in rows[keep][order]], scores[keep][order]


def draws(positive: np.ndarray, count: int = 8) -> list[list[str]]:
    rng = np.random.default_rng(1)
    rows = np.flatnonzero(positive)
    return [[f"t{i:06d}" for i in rng.choice(rows, 5, replace=False)] for _ in range(count)]


def test_pool_centring_finds_more_positives_than_table_centring_under_where(store, data):
    vectors, positive = data
    precision = {c: [] for c in ("pool", "index", "none")}
    for queries in draws(positive):
        for centring in precision:
            result = store.search(KEY, tiles=queries, k=50, where="dataset = 'even'", center=centring)
            assert set(result.hits["dataset"].to_list()) == {"even"}
            precision[centring].append(positive[rows_of(ids(result))].mean())
    pool, table, raw = (float(np.mean(precision[c])) for c in ("pool", "index", "none"))
    assert pool > 0.8 and pool >= table + 0.25 and pool >= raw + 0.1  # prevalence is ~0.06


def test_pool_centring_is_exact_pool_mean_cosine(store, data):
    vectors, positive = data
    even = np.arange(0, N, 2)
    queries = draws(positive, 1)[0]
    result = store.search(KEY, tiles=queries, k=40, where="dataset = 'even'")
    expected, scores = numpy_search(vectors, rows_of(queries), 40, vectors[even].mean(axis=0), even)
    assert ids(result) == expected
    np.testing.assert_allclose(result.hits["score"].to_numpy(), scores, atol=2e-5)
    assert result.centring == "pool"
    by_vectors = store.search(KEY, vectors=vectors[rows_of(queries)], k=45, where="dataset = 'even'")
    assert [t for t in ids(by_vectors) if t not in queries][:40] == expected  # raw queries centred alike


def test_none_equals_raw_cosine(store, data):
    vectors, _ = data
    result = store.search(KEY, tiles=["t000004", "t000010"], k=30, center="none")
    expected, scores = numpy_search(vectors, np.array([4, 10]), 30, None)
    assert ids(result) == expected and result.centring == "none"
    np.testing.assert_allclose(result.hits["score"].to_numpy(), scores, atol=2e-5)
    assert "scores: raw cosine (not centred)" in result.described()


def test_pool_without_filters_equals_table_centring(store, data):
    vectors, _ = data
    pool = store.search(KEY, tiles=["t000004"], k=30)
    table = store.search(KEY, tiles=["t000004"], k=30, center="index")
    assert ids(pool) == ids(table) == numpy_search(vectors, np.array([4]), 30, vectors.mean(axis=0))[0]
    assert pool.centring == table.centring == "table"
    assert "which is the pool's: no filter (2,000 tiles)" in pool.described()


def test_pool_after_rows_added_centres_on_the_current_table(store, data):
    vectors, _ = data
    extra = np.random.default_rng(5).normal(size=(200, 16)).astype(np.float32) + 10
    new_ids = [f"t{i:06d}" for i in range(N, N + 200)]
    tile = dict(source_id="src9", x=0, level=0, size0=32, width=32, height=32, slide="slide9", dataset="new")
    rows = [{"tile_id": t, "y": i, **tile} for i, t in enumerate(new_ids)]
    store.catalog.insert_missing(TILES, pa.Table.from_pylist(rows, schema=TILES_SCHEMA))
    writer = EmbeddingWriter(store.catalog, table_name(KEY), Provenance.given(KEY, 16))
    writer.write(new_ids, np.zeros(200, np.int16), extra)
    grown = np.concatenate([vectors, extra])
    result = store.search(KEY, tiles=["t000004"], k=30)
    assert result.centring == "pool" and "2,200 tiles, all of the table" in result.centring_text
    assert ids(result) == numpy_search(grown, np.array([4]), 30, grown.mean(axis=0))[0]
    saved = store.indexes()[0]  # the rows added were saved with their lengths
    assert saved.rows == N + 200 and saved.norms
    again = embedstore.open(store.root).search(KEY, tiles=["t000004"], k=30, where="dataset = 'new'")
    assert not again.notes and ids(again) == numpy_search(grown, np.array([4]), 30, extra.mean(axis=0),
                                                          np.arange(N, N + 200))[0]  # fmt: skip


def test_reported_index_and_centring_line(store):
    result = store.search(KEY, tiles=["t000004"], k=5, where="dataset = 'even'")
    line = result.described()
    assert line.startswith("index 'flat' (faiss flat, built centred on the table's mean over 2,000 rows @ v")
    assert line.endswith("scores: cosine centred on the pool's mean (1,000 tiles, after --where)")
    assert result.index_name == "flat"
    record = result.to_records()[0]
    assert record["index"] == "flat" and record["centring"] == "pool"
    manifest = store.indexes()[0]
    assert manifest.centered_on == "table" and manifest.norms
    assert manifest.mean_version == manifest.built_from_version


def test_uncentred_index_says_so(tmp_path, data):
    vectors, _ = data
    store = vector_store(tmp_path / "raw", vectors)
    store.index(KEY, kind="flat", center=False, name="exact")
    result = store.search(KEY, tiles=["t000004"], k=5, center="index")
    assert "index 'exact' (faiss flat, built uncentred over 2,000 rows" in result.described()
    assert result.described().endswith("scores: raw cosine (not centred)")
    pooled = store.search(KEY, tiles=["t000004"], k=5, where="dataset = 'odd'")
    assert pooled.centring == "pool" and "built uncentred" in pooled.described()


def test_old_index_without_norms_reads_them_from_the_table(store, data):
    """A manifest and ids file written before this change (no centered_on / mean_version / norms, no
    norm column) still load; re-centring reads the row lengths from the table once, with a note."""
    vectors, positive = data
    folder = next((store.root / "indexes").glob("*/flat"))
    record = json.loads((folder / "manifest.json").read_text())
    for name in ("centered_on", "mean_version", "norms"):
        record.pop(name)
    (folder / "manifest.json").write_text(json.dumps(record))
    ids_file = folder / record["files"]["ids"]
    table = feather.read_table(io.BytesIO(ids_file.read_bytes())).select(["tile_id"])
    buffer = io.BytesIO()
    feather.write_feather(table, buffer)
    ids_file.write_bytes(buffer.getvalue())

    old = embedstore.open(store.root)
    plain = old.search(KEY, tiles=["t000004"], k=10, center="index")
    assert plain.centring == "table" and not plain.notes  # the index's own centring needs no lengths
    queries = draws(positive, 1)[0]
    even = np.arange(0, N, 2)
    result = old.search(KEY, tiles=queries, k=30, where="dataset = 'even'")
    assert ids(result) == numpy_search(vectors, rows_of(queries), 30, vectors[even].mean(axis=0), even)[0]
    assert any("saved before it kept row lengths" in note for note in result.notes)


def test_l2_index_says_centring_does_not_apply(tmp_path, data):
    store = vector_store(tmp_path / "l2", data[0])
    store.index(KEY, kind="flat", metric="l2")
    result = store.search(KEY, tiles=["t000004"], k=5, where="dataset = 'even'")
    assert result.centring == "l2" and "centring does not apply to l2" in result.described()


def test_bad_center_is_refused(store):
    with pytest.raises(EmbedstoreError, match="center"):
        store.search(KEY, tiles=["t000004"], k=5, center="dataset")


def test_cli_center_option_and_json(store):
    args = ["search", store.root, "--backbone", KEY, "--tile", "t000004", "-k", "5"]
    found = run(*args, "--center", "none", "--where", "dataset = 'even'", "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert {(h["index"], h["centring"]) for h in hits} == {("flat", "none")}
    assert "scores: raw cosine (not centred)" in found.stderr
    text = run(*args, "--where", "dataset = 'even'")
    assert "5 hit(s) from index 'flat' (faiss flat, built centred on the table's mean" in text.stderr
    assert "scores: cosine centred on the pool's mean (1,000 tiles, after --where)" in text.stderr
    bad = run(*args, "--center", "dataset")
    assert bad.exit_code == 2 and "--center" in bad.output


@pytest.mark.parametrize("kind", ["hnsw", "lancedb"])
def test_other_index_kinds_recentre_exactly(tmp_path, data, kind):
    vectors, positive = data
    store = vector_store(tmp_path / kind, vectors)
    if kind == "lancedb":
        store.index(KEY, backend="lancedb", config=LanceConfig(num_partitions=8))
    else:
        store.index(KEY, kind=kind)
    queries = draws(positive, 1)[0]
    even = np.arange(0, N, 2)
    result = store.search(KEY, tiles=queries, k=30, where="dataset = 'even'")
    assert ids(result) == numpy_search(vectors, rows_of(queries), 30, vectors[even].mean(axis=0), even)[0]


def test_a_large_pool_takes_candidates_from_the_index(store, data, monkeypatch):
    """Above EXACT_POOL tiles the index proposes candidates (re-scored exactly): close to exact here."""
    from embedstore.search import searcher

    vectors, positive = data
    monkeypatch.setattr(searcher, "EXACT_POOL", 100)
    queries = draws(positive, 1)[0]
    even = np.arange(0, N, 2)
    result = store.search(KEY, tiles=queries, k=30, where="dataset = 'even'")
    expected, _ = numpy_search(vectors, rows_of(queries), 30, vectors[even].mean(axis=0), even)
    assert len(set(ids(result)) & set(expected)) >= 27
    assert (np.diff(result.hits["score"].to_numpy()) <= 1e-6).all()


def test_index_centred_on_a_subset_serves_the_same_where(tmp_path, data):
    vectors, positive = data
    store = vector_store(tmp_path / "subset", vectors)
    built = run("index", store.root, "--backbone", KEY, "--kind", "flat", "--center-on", "dataset = 'even'")
    assert built.exit_code == 0 and "centred on tiles where dataset = 'even'" in built.output, built.output
    manifest = store.indexes()[0]
    assert (manifest.centring, manifest.centered_on_where) == ("subset", "dataset = 'even'")
    even = np.arange(0, N, 2)
    np.testing.assert_allclose(manifest.mean_vector(), vectors[even].mean(axis=0), atol=1e-5)
    queries = draws(positive, 1)[0]
    result = store.search(KEY, tiles=queries, k=30, where="dataset = 'even'")
    assert result.centring == "subset" and "which is the pool's: the same --where (1,000 tiles)" in (
        result.centring_text
    )
    assert ids(result) == numpy_search(vectors, rows_of(queries), 30, vectors[even].mean(axis=0), even)[0]
    other = store.search(KEY, tiles=queries, k=30, where="dataset = 'odd'")  # another pool: re-centred
    assert other.centring == "pool"


def test_center_on_refusals(store):
    with pytest.raises(EmbedstoreError, match="--center-on .*drop --no-center"):
        store.index(KEY, kind="flat", center=False, center_on="dataset = 'even'")
    with pytest.raises(EmbedstoreError, match="--center-on \"dataset = 'none'\" selects no tile"):
        store.index(KEY, kind="flat", name="x", center_on="dataset = 'none'")
    with pytest.raises(EmbedstoreError, match="--center-on 'nocolumn = 1' is not a filter"):
        store.index(KEY, kind="flat", name="y", center_on="nocolumn = 1")
    assert [m.name for m in store.indexes()] == ["flat"]
