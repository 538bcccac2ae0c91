"""Several processes searching (and so updating) one index at once: every search succeeds, the index
ends with each row once, and nothing is left half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import pytest

import embedstore
from tests.helpers import clustered_vectors, vector_store
from tests.search.test_indexes import KEY, add_rows

ROOT = Path(__file__).resolve().parents[2]
SEARCH = """
import sys, embedstore
store = embedstore.open(sys.argv[1])
result = store.search("synthetic.vectors", tiles=[sys.argv[2]], k=6, index=sys.argv[3])
print(",".join(result.hits["tile_id"].to_list()))
"""


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_concurrent_searches_update_a_stale_index_once(tmp_path, kind):
    vectors = clustered_vectors(2000, dim=16, clusters=10)
    store = vector_store(tmp_path / "store", vectors)
    store.index(KEY, kind=kind)
    new = (vectors[7] + np.random.default_rng(2).normal(0, 0.001, (6, 16))).astype(np.float32)
    ids = add_rows(store, new, 9000)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", SEARCH, str(store.root), ids[0], kind],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-500:] for _, err in outputs]
    expected = sorted([*ids[1:], "t000007"])
    assert all(sorted(out.strip().split(",")) == expected for out, _ in outputs)

    manifest = store.indexes(KEY)[0]
    saved_ids = feather.read_table(manifest_dir(store, kind) / manifest.files["ids"]).column("tile_id")
    assert manifest.rows == len(saved_ids) == 2006 == len(set(saved_ids.to_pylist()))
    files = sorted(p.name for p in manifest_dir(store, kind).iterdir() if not p.name.startswith("."))
    assert files == sorted(["manifest.json", *manifest.files.values()])  # no leftovers
    again = embedstore.open(store.root).search(KEY, tiles=[ids[0]], k=6, update=False)
    assert sorted(again.hits["tile_id"].to_list()) == expected


def manifest_dir(store: embedstore.Store, name: str) -> Path:
    return store.root / "indexes" / "emb__synthetic_vectors" / name
