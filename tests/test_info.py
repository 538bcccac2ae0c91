"""`info` lists the saved indexes and heads with the table versions they are bound to, says when the table
has moved on since, and reports a damaged manifest or card instead of failing. Real store, FAISS, heads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore.storage.embedding_tables import table_name
from heads.training import train
from tests.heads.test_card_predict import add_tiles, labelled_store
from tests.heads.test_train import KEY, separable
from tests.helpers import add_task

TABLE = table_name(KEY)
FAST = {"epochs": 4, "batch_size": 32, "lr": 1e-2}
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A store of 120 tiles with index `exact` (flat) and linear head `h` on task tumour."""
    store, _ = labelled_store(tmp_path_factory.mktemp("info") / "store", n=120)
    store.index(KEY, kind="flat", name="exact")
    train(store, KEY, "tumour", name="h", **FAST)
    return store.root


def copy_of(saved: Path, tmp_path: Path) -> embedstore.Store:
    shutil.copytree(saved, tmp_path / "store")
    return embedstore.open(tmp_path / "store")


def test_info_lists_the_index_and_the_head_with_their_versions(saved):
    store = embedstore.open(saved)
    info = store.info()
    version, labels = int(store.catalog.dataset(TABLE).version), int(store.catalog.dataset("labels").version)
    [index] = info["indexes"]
    assert index["name"] == "exact" and index["table"] == TABLE and index["backbone"] == KEY
    assert (index["backend"], index["kind"], index["metric"], index["centring"]) == (
        "faiss",
        "flat",
        "cosine",
        "table",
    )
    assert (index["rows"], index["table_version"], index["table_version_now"]) == (120, version, version)
    assert index["status"] == "current" and index["rows_added"] == 0
    [head] = info["heads"]
    assert (head["name"], head["task"], head["backbone"], head["kind"]) == ("h", "tumour", KEY, "linear")
    assert (head["table_version"], head["labels_version"], head["status"]) == (version, labels, "current")
    assert head["validation"]["metric"] == "auroc" and head["validation"]["value"] > 0.9
    assert head["labels_changed"] is False
    text = CliRunner().invoke(app, ["info", str(saved)])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    at = lines.index("indexes")
    assert lines[at + 1].split() == ["name", "table", "index", "centring", "rows", "bound", "to", "status"]
    assert lines[at + 2].split() == [
        "exact",
        TABLE,
        "faiss",
        "flat",
        "cosine",
        "table",
        "120",
        f"v{version}",
        "current",
    ]
    row = lines[lines.index("heads") + 2].split()
    assert row[:5] == ["h", "tumour", KEY, "linear", f"v{version},"] and row[-1] == "current"
    assert (
        json.loads(CliRunner().invoke(app, ["info", str(saved), "--json"]).output)["heads"] == info["heads"]
    )


def test_listing_imports_neither_faiss_nor_torch(saved):
    code = (
        "import sys, embedstore; info = embedstore.open(sys.argv[1]).info(); "
        "print(len(info['indexes']), len(info['heads']), [m for m in ('faiss', 'torch') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(saved)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split("\n")[0] == "1 1 []"


def test_after_more_rows_and_labels_info_says_the_index_and_head_are_behind(saved, tmp_path):
    store = copy_of(saved, tmp_path)
    before = int(store.catalog.dataset(TABLE).version)
    vectors, codes = separable(5, seed=3)
    ids = add_tiles(store, vectors, start=1000)
    add_task(store, "tumour", {t: "tumour" if c else "normal" for t, c in zip(ids, codes, strict=True)})
    info = store.info()
    now = int(store.catalog.dataset(TABLE).version)
    [index], [head] = info["indexes"], info["heads"]
    assert (index["status"], index["table_version"], index["table_version_now"]) == ("behind", before, now)
    assert index["rows_added"] == 5
    assert (head["status"], head["rows_added"], head["labels_changed"]) == ("behind", 5, True)
    text = CliRunner().invoke(app, ["info", str(store.root)]).output
    assert f"behind: table now v{now}, +5 rows (search adds them)" in text
    assert f"behind: table now v{now}, +5 rows (trained before them)" in text
    assert f"labels now v{int(store.catalog.dataset('labels').version)}" in text
    store.search(KEY, tiles=["t000001"], k=3, index="exact")  # the search brings the index up to date
    assert store.info()["indexes"][0]["status"] == "current"


def test_a_damaged_manifest_or_card_is_listed_as_such(saved, tmp_path):
    store = copy_of(saved, tmp_path)
    (store.root / "indexes" / TABLE / "exact" / "manifest.json").write_text("{not json")
    card = store.root / "heads" / "h" / "card.json"
    record = json.loads(card.read_text())
    del record["table_version"]
    card.write_text(json.dumps(record))
    info = store.info()
    [index], [head] = info["indexes"], info["heads"]
    assert (index["name"], index["table"], index["status"]) == ("exact", TABLE, "damaged")
    assert index["problem"].startswith("manifest.json cannot be read")
    assert (head["name"], head["status"], head["problem"]) == (
        "h",
        "damaged",
        "card.json lacks valid table_version",
    )
    result = CliRunner().invoke(app, ["info", str(store.root)])
    assert result.exit_code == 0, result.output
    assert "DAMAGED: manifest.json cannot be read" in result.output
    assert "DAMAGED: card.json lacks valid table_version" in result.output
