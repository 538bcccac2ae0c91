"""`heads.evaluate`: a saved head scored on a labelled task. Its scores equal scikit-learn's on the same
rows, the tiles it trained and validated on are left out unless asked, predictions mark them, old heads and
prediction tables keep working, bad input is one line, and multi-class heads are scored too."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics as sk
from sklearn.preprocessing import label_binarize

from heads.card import HEADS_DIR, SPLIT, read_card
from heads.errors import HeadsError
from heads.evaluation import average_precision, evaluate
from heads.prediction import predict, predictions_schema, predictions_table
from heads.training import train
from tests.heads.test_train import KEY, SLIDES, separable
from tests.helpers import add_task, vector_store

N, TRAINED = 400, 300  # tiles; the head's task labels the first TRAINED, the external task all N
FAST = {"epochs": 6, "batch_size": 32, "lr": 1e-2}
IDS = [f"t{i:06d}" for i in range(N)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """Head `h` trained on task tumour (tiles 0..299); task external labels all 400 tiles, the last 100
    noisier, so that the held-out scores are not all perfect."""
    vectors, codes = separable(N, seed=0)
    vectors[TRAINED:] += np.random.default_rng(1).normal(0, 1.5, vectors[TRAINED:].shape).astype(np.float32)
    store = vector_store(tmp_path_factory.mktemp("evaluate") / "store", vectors, slides=SLIDES, key=KEY)
    names = {t: "tumour" if c else "normal" for t, c in zip(IDS, codes, strict=True)}
    add_task(store, "tumour", {t: names[t] for t in IDS[:TRAINED]})
    add_task(store, "external", names)
    add_task(store, "grades", {t: f"g{i % 3}" for i, t in enumerate(IDS)})
    train(store, KEY, "tumour", name="h", **FAST)
    return store, codes


def test_scores_equal_scikit_learns_on_the_held_out_rows(binary):
    store, codes = binary
    report = evaluate(store, "h", "external", bootstrap=200)
    assert (
        report.tile_ids.tolist() == IDS[TRAINED:]
    )  # every tile of the head's task was trained or validated on
    y, p = report.y, report.probabilities[:, 1]
    assert y.tolist() == codes[TRAINED:].tolist()  # classes in the head's order: normal, tumour
    card = read_card(store, "h")
    predicted = (p >= card.threshold).astype(int)
    assert report.metrics["auroc"].value == pytest.approx(sk.roc_auc_score(y, p))
    assert report.metrics["average_precision"].value == pytest.approx(sk.average_precision_score(y, p))
    assert report.metrics["balanced_accuracy"].value == pytest.approx(
        sk.balanced_accuracy_score(y, predicted)
    )
    assert report.metrics["f1"].value == pytest.approx(sk.f1_score(y, predicted))
    assert report.confusion == sk.confusion_matrix(y, predicted).tolist()
    assert 0.8 < report.metrics["auroc"].value < 1  # held out and noisier: good, not perfect
    assert report.group_by == "slide" and report.groups == SLIDES
    for score in report.metrics.values():
        assert score.low <= score.value <= score.high and score.high - score.low > 0


def test_few_groups_are_noted(binary):
    report = evaluate(binary[0], "h", "external", group_by="dataset", bootstrap=10)
    assert report.groups == 2 and "only 2 dataset group(s): the intervals say little" in report.summary()


def test_average_precision_equals_scikit_learns_with_ties():
    rng = np.random.default_rng(3)
    positive = rng.random(500) < 0.3
    score = np.round(rng.random(500) + 0.3 * positive, 1)  # many ties
    assert average_precision(positive, score) == pytest.approx(sk.average_precision_score(positive, score))


def test_training_tiles_are_left_out_unless_asked(binary):
    store, _ = binary
    card = read_card(store, "h")
    held_out = evaluate(store, "h", "external", bootstrap=10)
    assert held_out.tiles == N - TRAINED
    assert held_out.excluded == {"train": card.tiles_train, "validation": card.tiles_validation}
    assert "left out: " in held_out.summary() and "--include-training" in held_out.summary()
    everything = evaluate(store, "h", "external", include_training=True, bootstrap=10)
    assert everything.tiles == N and "scores are optimistic" in everything.summary()
    with pytest.raises(
        HeadsError,
        match="all 300 labelled tiles of task 'tumour' are in the training or validation set of head 'h'",
    ) as error:
        evaluate(store, "h", "tumour")
    assert "--include-training" in str(error.value)
    assert evaluate(store, "h", "tumour", include_training=True, bootstrap=10).tiles == TRAINED


def test_predictions_mark_the_tiles_the_head_trained_and_validated_on(binary):
    store, _ = binary
    predict(store, "h")
    table = store.catalog.read(predictions_table("h")).to_pydict()
    side = dict(zip(table["tile_id"], table["split"], strict=True))
    card = read_card(store, "h")
    assert sum(s == "train" for s in side.values()) == card.tiles_train
    assert sum(s == "validation" for s in side.values()) == card.tiles_validation
    assert {side[t] for t in IDS[TRAINED:]} == {"none"}
    assert {side[t] for t in IDS[:TRAINED]} == {"train", "validation"}


def test_a_head_saved_without_its_split_is_scored_with_a_warning(binary, tmp_path):
    """A head from before split records: evaluation scores every labelled tile and says the split is
    unknown; an older predictions table (no split column) is filled without one."""
    store, _ = binary
    heads = store.root / HEADS_DIR
    shutil.copytree(heads / "h", heads / "old")
    (heads / "old" / SPLIT).unlink()
    card = json.loads((heads / "old" / "card.json").read_text())
    (heads / "old" / "card.json").write_text(json.dumps({**card, "name": "old"}))
    report = evaluate(store, "old", "external", bootstrap=10)
    assert report.tiles == N and not report.split_known
    assert "training tiles unknown" in report.summary()
    old_schema = predictions_schema(read_card(store, "old"))
    old_schema = pa.schema([f for f in old_schema if f.name != "split"], metadata=old_schema.metadata)
    store.catalog.create_table(predictions_table("old"), old_schema)
    assert predict(store, "old").new_rows == N
    assert store.catalog.read(predictions_table("old")).column_names == [
        "tile_id",
        "score",
        "probabilities",
        "label",
    ]


def test_bad_input_is_one_line_naming_the_fix(binary):
    store, _ = binary
    with pytest.raises(HeadsError, match="no head 'nope'.*heads: h"):
        evaluate(store, "nope", "external")
    with pytest.raises(HeadsError, match="unknown task 'nope'; tasks in this store: "):
        evaluate(store, "h", "nope")
    with pytest.raises(HeadsError) as error:
        evaluate(store, "h", "grades")
    message = str(error.value)
    assert "\n" not in message
    assert "labels g0, g1, g2" in message and "its classes: normal, tumour" in message


def test_a_multiclass_head_is_scored_one_versus_rest(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.permutation(np.arange(300) % 3)
    vectors = (rng.normal(size=(3, 16)) * 2.0)[codes] + rng.normal(size=(300, 16)) * 1.5
    store = vector_store(tmp_path / "store", vectors.astype(np.float32), slides=SLIDES, key=KEY)
    ids = [f"t{i:06d}" for i in range(300)]
    add_task(store, "kind", {t: "abc"[c] for t, c in zip(ids, codes, strict=True)})
    train(store, KEY, "kind", name="m", **FAST)
    report = evaluate(store, "m", "kind", include_training=True, bootstrap=50)
    y, p = report.y, report.probabilities
    predicted = p.argmax(axis=1)
    assert report.threshold is None and report.classes == ["a", "b", "c"]
    assert report.metrics["auroc"].value == pytest.approx(sk.roc_auc_score(y, p, multi_class="ovr"))
    assert report.metrics["average_precision"].value == pytest.approx(
        sk.average_precision_score(label_binarize(y, classes=[0, 1, 2]), p)
    )
    assert report.metrics["macro_f1"].value == pytest.approx(sk.f1_score(y, predicted, average="macro"))
    assert report.metrics["balanced_accuracy"].value == pytest.approx(
        sk.balanced_accuracy_score(y, predicted)
    )
    assert report.confusion == sk.confusion_matrix(y, predicted).tolist()
    assert "macro-F1" in report.summary() and set(report.to_dict()["metrics"]) == set(report.metrics)
