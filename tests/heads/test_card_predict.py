"""Saved heads and their predictions on real stores: the card and weights round trip, refusals (another
backbone, changed weights, an existing name), the incremental `pred__<name>` table (one row per tile,
nothing twice, new tiles next time, concurrent runs, rebuilt after retraining) and the top-tiles CSV."""

from __future__ import annotations

import csv
import dataclasses
import json
import threading

import numpy as np
import pyarrow as pa
import pytest

from embedstore.core.schema import TILES, TILES_SCHEMA
from embedstore.embed.writer import EmbeddingWriter
from embedstore.storage.embedding_tables import Provenance, table_name
from heads.card import list_heads, load_head, read_card
from heads.errors import HeadsError
from heads.prediction import export_top, predict, predictions_table
from heads.training import train
from tests.heads.test_train import DIM, KEY, SLIDES, add_task, separable
from tests.helpers import add_vectors, vector_store

N = 300
FAST = {"epochs": 6, "batch_size": 32, "lr": 1e-2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def labelled_store(path, n: int = N, seed: int = 0):
    vectors, codes = separable(n, seed=seed)
    store = vector_store(path, vectors, slides=SLIDES, key=KEY)
    add_task(store, "tumour", {f"t{i:06d}": "tumour" if c else "normal" for i, c in enumerate(codes)})
    return store, vectors


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A store with a linear head `h` trained on it (the tests that change the store make their own)."""
    store, vectors = labelled_store(tmp_path_factory.mktemp("predict") / "store")
    result = train(store, KEY, "tumour", name="h", **FAST)
    return store, vectors, result


def add_tiles(store, vectors: np.ndarray, start: int) -> list[str]:
    """Tiles t{start}.. with `vectors`, embedded by KEY."""
    ids = [f"t{start + i:06d}" for i in range(len(vectors))]
    rows = [
        {"tile_id": t, "source_id": "src0", "x": 32 * (start + i), "y": 0, "level": 0, "slide": "slide0"}
        for i, t in enumerate(ids)
    ]
    store.catalog.insert_missing(TILES, pa.Table.from_pylist(rows, schema=TILES_SCHEMA))
    writer = EmbeddingWriter(store.catalog, table_name(KEY), Provenance.given(KEY, vectors.shape[1]))
    writer.write(ids, np.zeros(len(ids), np.int16), vectors)
    return ids


def predictions(store, name: str) -> dict[str, tuple[float, list[float], str]]:
    table = store.catalog.read(predictions_table(name)).to_pydict()
    return {
        t: (s, p, lab)
        for t, s, p, lab in zip(
            table["tile_id"], table["score"], table["probabilities"], table["label"], strict=True
        )
    }


# -- the card and the weights ----------------------------------------------------------------------------


def test_saved_head_predicts_exactly_as_trained(head):
    store, vectors, result = head
    card, loaded = load_head(store, "h")
    assert card == result.card
    assert type(loaded) is type(result.estimator) and loaded.threshold_ == result.threshold
    np.testing.assert_array_equal(loaded.predict_proba(vectors), result.estimator.predict_proba(vectors))
    assert (loaded.predict(vectors) == result.estimator.predict(vectors)).all()
    saved = json.loads((result.path / "card.json").read_text())
    assert saved["classes"] == ["normal", "tumour"] and saved["backbone"] == KEY
    assert saved["params"]["epochs"] == FAST["epochs"] and saved["versions"]["torch"]
    assert [c.name for c in list_heads(store)] == ["h"] and read_card(store, "h") == card
    assert not list(result.path.parent.glob(".h.*"))  # no staging directory left behind


def test_loading_refuses_another_backbone_and_unknown_names(head):
    store, vectors, _ = head
    add_vectors(store, "other.v", vectors)
    with pytest.raises(HeadsError, match=r"trained on backbone 'synthetic.v', not 'other.v'"):
        load_head(store, "h", backbone="other.v")
    with pytest.raises(HeadsError, match=r"trained on backbone"):
        predict(store, "h", backbone="other.v")
    with pytest.raises(HeadsError, match=r"no head 'nope' .*heads: h"):
        load_head(store, "nope")


def test_loading_refuses_a_table_of_other_weights(tmp_path):
    store, vectors = labelled_store(tmp_path / "store", n=120)
    train(store, KEY, "tumour", name="h", epochs=1)
    store.catalog.drop_table(table_name(KEY))
    provenance = dataclasses.replace(Provenance.given(KEY, DIM), weights_sha256="1" * 64)
    EmbeddingWriter(store.catalog, table_name(KEY), provenance).write(
        [f"t{i:06d}" for i in range(len(vectors))], np.zeros(len(vectors), np.int16), vectors
    )
    with pytest.raises(
        HeadsError, match=r"weights sha256 000000000000.*now holds weights 111111111111.*retrain"
    ):
        load_head(store, "h")
    with pytest.raises(HeadsError, match="retrain"):
        predict(store, "h")


def test_existing_name_is_refused_then_replaced_with_overwrite(tmp_path):
    store, _ = labelled_store(tmp_path / "store", n=120)
    first = train(store, KEY, "tumour", name="h", epochs=1)
    with pytest.raises(HeadsError, match=r"head 'h' exists .*--overwrite"):
        train(store, KEY, "tumour", name="h", epochs=1)
    second = train(store, KEY, "tumour", name="h", epochs=2, overwrite=True)
    assert read_card(store, "h").created == second.card.created != first.card.created
    assert read_card(store, "h").epochs == 2


# -- predicting -------------------------------------------------------------------------------------------


def test_predict_writes_every_tile_once_then_only_new_tiles(tmp_path):
    store, vectors = labelled_store(tmp_path / "store")
    result = train(store, KEY, "tumour", name="h", **FAST)
    first = predict(store, "h")
    assert (first.new_rows, first.total_rows, first.rebuilt) == (N, N, False)
    table = predictions(store, "h")
    assert sorted(table) == [f"t{i:06d}" for i in range(N)]
    expected = result.estimator.predict_proba(vectors)
    got = np.array([table[f"t{i:06d}"][1] for i in range(N)], np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    scores = np.array([table[f"t{i:06d}"][0] for i in range(N)], np.float32)
    np.testing.assert_allclose(scores, expected[:, 1], rtol=1e-6)
    labels = [table[f"t{i:06d}"][2] for i in range(N)]
    assert labels == np.where(expected[:, 1] >= result.threshold, "tumour", "normal").tolist()
    version = int(store.catalog.dataset(predictions_table("h")).version)

    assert predict(store, "h").new_rows == 0
    assert int(store.catalog.dataset(predictions_table("h")).version) == version  # nothing written

    more, _ = separable(25, seed=5)
    new_ids = add_tiles(store, more, start=N)
    report = predict(store, "h")
    assert (report.new_rows, report.total_rows) == (25, N + 25)
    table = predictions(store, "h")
    np.testing.assert_allclose(
        np.array([table[t][1] for t in new_ids]), result.estimator.predict_proba(more), rtol=1e-6
    )


def test_concurrent_predicts_write_each_tile_once(tmp_path):
    store, _ = labelled_store(tmp_path / "store", n=200)
    train(store, KEY, "tumour", name="h", epochs=1)
    reports, errors = [], []

    def run():
        try:
            reports.append(predict(store, "h", batch_size=50))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    ids = store.catalog.read(predictions_table("h"), columns=["tile_id"]).column("tile_id").to_pylist()
    assert len(ids) == len(set(ids)) == 200
    assert sum(r.new_rows for r in reports) == 200


def test_retrained_head_rebuilds_its_predictions(tmp_path):
    store, _ = labelled_store(tmp_path / "store", n=120)
    train(store, KEY, "tumour", name="h", epochs=1)
    predict(store, "h")
    retrained = train(store, KEY, "tumour", name="h", epochs=3, lr=0.05, overwrite=True)
    report = predict(store, "h")
    assert report.rebuilt and (report.new_rows, report.total_rows) == (120, 120)
    table = predictions(store, "h")
    assert table["t000007"][0] == pytest.approx(
        float(
            retrained.estimator.predict_proba(
                store.embeddings(KEY).where("tile_id = 't000007'").to_numpy().X
            )[0, 1]
        ),
        rel=1e-6,
    )
    assert not predict(store, "h").rebuilt


# -- the top tiles ----------------------------------------------------------------------------------------


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_export_top_lists_the_highest_scores_with_tile_metadata(head, tmp_path):
    store, _, _ = head
    with pytest.raises(HeadsError, match=r"no predictions yet; run `embedstore predict .* --head h`"):
        export_top(store, "h", tmp_path / "none.csv")
    predict(store, "h")
    rows = read_csv(export_top(store, "h", tmp_path / "top.csv", n=10))
    scores = [float(r["score"]) for r in rows]
    every = sorted((s for s, _, _ in predictions(store, "h").values()), reverse=True)
    assert len(rows) == 10 and scores == pytest.approx(every[:10], rel=1e-5)
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 11)]
    first = rows[0]
    i = int(first["tile_id"][1:])
    assert first["slide"] == f"slide{i % SLIDES}" and first["source_id"] == f"src{i % SLIDES}"
    assert (int(first["x"]), int(first["y"])) == (32 * (i // SLIDES), 0)
    assert {"p(normal)", "p(tumour)", "label", "source", "size0"} <= set(first)
    normal = read_csv(export_top(store, "h", tmp_path / "normal.csv", n=5, class_name="normal"))
    assert all(float(r["p(normal)"]) > 0.5 for r in normal) and float(normal[0]["score"]) == pytest.approx(
        float(normal[0]["p(normal)"])
    )
    with pytest.raises(HeadsError, match=r"no class 'x'; its classes: normal, tumour"):
        export_top(store, "h", tmp_path / "x.csv", class_name="x")
