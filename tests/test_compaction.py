"""The automatic compaction after `embed` and `ingest` (#24 item 2), on real Lance tables: fragments
bounded, nothing lost or duplicated beside a writer in another process, tags and the versions saved
indexes and heads are bound to kept, retention pruning exactly the untagged old versions, `info` and
`embedstore config` showing it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore.core.schema import LABELS, LABELS_SCHEMA, label_key
from embedstore.embed.writer import EmbeddingWriter
from embedstore.storage.embedding_tables import recorded_provenance
from embedstore.storage.saved import INDEX_DIR, INDEX_MANIFEST
from embedstore.storage.versions import FRAGMENT_LIMIT, MIN_RETENTION, upkeep
from tests.helpers import key_counts, write_tiles

ROOT = Path(__file__).resolve().parents[1]
FAST = "handcrafted.color_texture"
EMB = "emb__handcrafted_color_texture"
TILES_N = FRAGMENT_LIMIT + 16


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def add_labels(store: embedstore.Store, first: int, count: int, task: str = "t") -> None:
    """One commit (one version, one fragment) of `count` generated labels."""
    ids = [f"l{i:06d}" for i in range(first, first + count)]
    rows = pa.table(
        {
            "row_key": [label_key(task, tile) for tile in ids],
            "task": [task] * count,
            "tile_id": ids,
            "label": ["x"] * count,
            "origin": ["import"] * count,
        },
        schema=LABELS_SCHEMA,
    )
    assert store.catalog.insert_missing(LABELS, rows) == count


def fragments(store: embedstore.Store, table: str) -> int:
    return len(store.catalog.dataset(table).get_fragments())


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    return write_tiles(tmp_path_factory.mktemp("tiles") / "tiles", TILES_N, seed=3, side=16)


@pytest.fixture
def fragmented(tmp_path, tiles) -> embedstore.Store:
    """A store whose embedding table has FRAGMENT_LIMIT + 2 one-row fragments (real commits of the
    embed writer, the table's own provenance) and misses the other tiles' rows."""
    store = embedstore.init(tmp_path / "store")
    store.ingest([tiles], progress=False)
    store.embed(FAST, limit=1, progress=False, workers=0, compact=False)
    provenance = recorded_provenance(store.catalog.dataset(EMB).schema, EMB)
    writer = EmbeddingWriter(store.catalog, EMB, provenance)
    done = set(store.catalog.read(EMB, columns=["tile_id"]).column("tile_id").to_pylist())
    todo = [t for t in sorted(store.catalog.tile_ids()) if t not in done][: FRAGMENT_LIMIT + 1]
    rng = np.random.default_rng(0)
    for tile in todo:
        writer.write([tile], np.zeros(1, np.int16), rng.normal(size=(1, provenance.dim)).astype(np.float32))
    assert fragments(store, EMB) == FRAGMENT_LIMIT + 2
    return store


def test_an_embed_run_ends_with_its_fragments_merged(fragmented):
    store = fragmented
    report = store.embed(FAST, progress=False, workers=0)
    assert report.rows_written == TILES_N - FRAGMENT_LIMIT - 2
    [done] = report.compaction
    assert done.table == EMB and done.compacted and not done.note
    assert done.fragments_before == FRAGMENT_LIMIT + 3 and done.fragments_after <= FRAGMENT_LIMIT
    assert fragments(store, EMB) == done.fragments_after == 1
    assert key_counts(store, EMB, "row_key") == (TILES_N, TILES_N)
    assert "compaction: emb__handcrafted_color_texture: 67 -> 1 fragments" in report.summary()
    assert report.to_dict()["compaction"][0]["fragments_after"] == 1
    assert store.check().ok


def test_no_compact_leaves_the_fragments_and_info_says_so(fragmented):
    store = fragmented
    report = store.embed(FAST, progress=False, workers=0, compact=False)
    assert report.compaction == [] and fragments(store, EMB) == FRAGMENT_LIMIT + 3
    table = store.info()["tables"][EMB]
    assert (table["fragments"], table["small_fragments"]) == (FRAGMENT_LIMIT + 3, FRAGMENT_LIMIT + 3)
    assert table["versions"] == len(store.versions(EMB))
    text = run("info", store.root).output
    assert f"{EMB}: {TILES_N} rows, version {table['version']}" in text
    assert f"{FRAGMENT_LIMIT + 3} fragment(s), {table['versions']} version(s) kept" in text
    assert f"{EMB}: more than {FRAGMENT_LIMIT} small fragments slow reads and writes" in text
    assert "embedstore compact" in text
    listed = json.loads(run("info", store.root, "--json").output)["tables"][EMB]
    assert listed["fragments"] == FRAGMENT_LIMIT + 3 and listed["versions"] == table["versions"]
    # `embedstore compact` merges them even though the young versions keep the old files a while
    compacted = store.compact().tables[EMB]
    assert compacted.compacted and "old files stay on disk" in compacted.note
    assert fragments(store, EMB) == 1
    assert "small fragments" not in run("info", store.root).output


def test_ingest_ends_with_its_tables_compacted(tmp_path, tiles):
    store = embedstore.init(tmp_path / "store")
    report = store.ingest([tiles], task="t", chunk_tiles=1, progress=False, workers=1)
    assert report.tiles_added == TILES_N
    merged = {done.table: done for done in report.compaction}
    assert set(merged) == {"tiles", "labels", "files", "sources"}
    for name, done in merged.items():
        assert done.compacted and done.fragments_before > FRAGMENT_LIMIT, name
        assert fragments(store, name) == done.fragments_after <= 2, name
    assert key_counts(store, "tiles", "tile_id") == (TILES_N, TILES_N)
    again = store.ingest([tiles], task="t", progress=False)
    assert again.tiles_added == 0 and again.compaction == []  # nothing written, nothing touched


def test_compaction_beside_a_writer_process_loses_and_duplicates_nothing(tmp_path):
    """A writer in another process inserts labels by key in 2-row commits (each re-sending the previous
    commit's rows) while this process compacts the table again and again."""
    store = embedstore.init(tmp_path / "store")
    count = 400
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.writer_process", "labels", store.root, "race", "--chunk", "2"]
        + ["--limit", str(count)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = store.root / ".labels-started"
    deadline = time.monotonic() + 120
    while not started.exists() and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    merged_while_writing, notes = 0, []
    while writer.poll() is None:  # pruning too (nothing is old enough: MIN_RETENTION)
        done = upkeep(store.catalog.dataset(LABELS), LABELS, MIN_RETENTION, limit=1)
        merged_while_writing += done.compacted and writer.poll() is None
        notes += [done.note] if done.note else []
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0 and "Traceback" not in err, err
    assert json.loads(out.strip().splitlines()[-1])["inserted"] == count
    assert merged_while_writing >= 2, (merged_while_writing, notes)
    keys = store.catalog.read(LABELS, columns=["row_key"]).column("row_key").to_pylist()
    assert len(keys) == count and set(keys) == {label_key("race", f"l{i:06d}") for i in range(count)}
    final = upkeep(store.catalog.dataset(LABELS), LABELS, MIN_RETENTION, limit=1)
    assert final.fragments_after == 1 and key_counts(store, LABELS, "row_key") == (count, count)


def test_tags_survive_compaction_and_pruning(tmp_path):
    store = embedstore.init(tmp_path / "store")
    for i in range(5):
        add_labels(store, 10 * i, 10)
    tagged = store.tag(LABELS, "five-commits-in", version=int(store.catalog.dataset(LABELS).version) - 2)
    rows_then = store.catalog.dataset(LABELS, tagged).count_rows()
    done = upkeep(store.catalog.dataset(LABELS), LABELS, timedelta(0), limit=0)
    assert done.compacted and done.versions_pruned > 0 and done.fragments_after == 1
    versions = store.versions(LABELS)
    assert [v["version"] for v in versions] == [tagged, versions[-1]["version"]]
    assert versions[0]["tags"] == ["five-commits-in"]
    assert store.catalog.dataset(LABELS, "five-commits-in").count_rows() == rows_then == 30
    assert store.catalog.read(LABELS, version="five-commits-in").num_rows == 30
    assert store.catalog.count(LABELS) == 50
    store.restore(LABELS, "five-commits-in")  # the tagged version is whole: it can be made the newest
    assert store.catalog.count(LABELS) == 30


def test_retention_prunes_exactly_the_untagged_old_versions(tmp_path):
    """Old: v1 (empty), v2, v3 (tagged), v4 (an index is bound to it), v5; then, after the retention,
    v6, v7. Pruning removes v1, v2 and v5 only."""
    store = embedstore.init(tmp_path / "store")
    for i in range(4):
        add_labels(store, 10 * i, 10)
    store.tag(LABELS, "kept", version=3)
    bind_an_index_to(store, LABELS, 4)
    time.sleep(2.2)
    add_labels(store, 40, 10)
    add_labels(store, 50, 10)
    assert [v["version"] for v in store.versions(LABELS)] == [1, 2, 3, 4, 5, 6, 7]
    [done] = store.catalog.upkeep([LABELS], retention=timedelta(seconds=2))
    assert (done.versions_pruned, done.compacted) == (3, False)  # 6 fragments: too few to merge
    assert [v["version"] for v in store.versions(LABELS)] == [3, 4, 6, 7]
    assert store.catalog.dataset(LABELS, 4).count_rows() == 30
    assert store.catalog.count(LABELS) == 60
    # `embedstore compact` keeps the bound version too
    store.compact(older_than="0s")
    assert [v["version"] for v in store.versions(LABELS)] == [3, 4, 7]


def bind_an_index_to(store: embedstore.Store, table: str, version: int) -> None:
    """The manifest an index saved at `version` of `table` would have (the fields `info` reads)."""
    folder = store.root / INDEX_DIR / table / "bound"
    folder.mkdir(parents=True)
    record = {
        "name": "bound",
        "backend": "faiss",
        "kind": "flat",
        "metric": "cosine",
        "center": False,
        "table": table,
        "table_version": version,
        "backbone": "none",
        "weights_sha256": "none",
        "rows": 40,
    }
    (folder / INDEX_MANIFEST).write_text(json.dumps(record))


def test_config_cli(tmp_path):
    store = tmp_path / "store"
    embedstore.init(store)
    shown = run("config", store)
    assert shown.exit_code == 0 and shown.output.startswith("version_retention  7d")
    changed = run("config", store, "--version-retention", "3d12h", "--json")
    assert changed.exit_code == 0 and json.loads(changed.output) == {"version_retention": "3d12h"}
    assert embedstore.open(store).settings().retention == timedelta(days=3, hours=12)
    assert embedstore.open(store).configure(version_retention=timedelta(hours=1)).version_retention == "1h"
    short = run("config", store, "--version-retention", "30m")
    assert short.exit_code == 2 and "is shorter than 1h: other processes may still read" in short.output
    assert embedstore.open(store).settings().version_retention == "1h"
    bad = run("config", store, "--version-retention", "soon")
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "error: --version-retention 'soon' is not a duration; use e.g. 7d, 12h, 30m or 0s"
    ]
    assert "--no-compact" in run("embed", "--help").output
    assert "--no-compact" in run("ingest", "--help").output
