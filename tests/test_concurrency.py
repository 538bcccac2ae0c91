"""Writers in real, separate processes: racing, overlapping, killed with SIGKILL mid-run.

Every scenario ends with exactly one row per key in every table (tile_id in tiles, (tile_id, view) in
emb__*, (task, tile_id) in labels, source_id in sources, uri in files), no traceback, and a clean check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lance
import pytest

import embedstore
from embedstore.core import hooks
from embedstore.storage import keyed_writes
from embedstore.storage.embedding_tables import Provenance, embedding_schema
from tests.helpers import generated_keys, generated_rows, key_counts, write_tiles

ROOT = Path(__file__).resolve().parents[1]
FAST = "handcrafted.color_texture"
EMB = "emb__handcrafted_color_texture"


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.writer_process", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def run_together(*commands: tuple[str, ...]) -> list[dict]:
    """Start every command at once; each must succeed without a traceback. Returns their reports."""
    processes = [start(*command) for command in commands]
    reports = []
    for process in processes:
        code, out, err = finish(process)
        assert code == 0 and "Traceback" not in err, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def assert_one_row_per_key(store: embedstore.Store) -> None:
    for table, key in [
        ("sources", "source_id"),
        ("tiles", "tile_id"),
        ("labels", "row_key"),
        ("files", "uri"),
    ]:
        rows, distinct = key_counts(store, table, key)
        assert rows == distinct, f"{table}: {rows} rows for {distinct} keys"
    for table in store.catalog.embedding_table_names():
        pairs = store.catalog.read(table, columns=["tile_id", "view"]).to_pylist()
        assert len(pairs) == len({(p["tile_id"], p["view"]) for p in pairs}), table
    report = store.check()
    assert report.ok, report.summary()


@pytest.fixture
def tiles(tmp_path) -> Path:
    return write_tiles(tmp_path / "tiles", 60, seed=0, side=24)


@pytest.mark.parametrize("already_embedded", [0, 20])
def test_three_embeds_of_one_key_end_with_one_row_per_tile(tmp_path, tiles, already_embedded):
    """With the table missing (all three create it) or partly filled (all three fill the same gap)."""
    store = embedstore.init(tmp_path / "store")
    store.ingest([tiles], task="t", progress=False)
    if already_embedded:
        store.embed(FAST, limit=already_embedded, progress=False, workers=0)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    command = ("embed", store.root, FAST, "--chunk", "16", "--barrier", f"{barrier}:3")
    reports = run_together(command, command, command)
    assert_one_row_per_key(store)
    assert key_counts(store, EMB, "row_key") == (60, 60)
    assert sum(r["rows_written"] for r in reports) == 60 - already_embedded
    assert sum(r["rows_written_elsewhere"] for r in reports) == 2 * (60 - already_embedded)


def test_two_ingests_of_one_folder_end_with_one_row_per_tile(tmp_path, tiles):
    store = embedstore.init(tmp_path / "store")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    command = ("ingest", store.root, tiles, "--task", "t", "--chunk", "7", "--barrier", f"{barrier}:2")
    reports = run_together(command, command)
    assert_one_row_per_key(store)
    assert store.info()["tiles"] == 60 and store.info()["tasks"]["t"] == {"a": 30, "b": 30}
    assert store.info()["files"] == 60 and store.info()["sources"]["ok"] == 60
    assert sum(r["tiles_added"] for r in reports) == 60


def test_an_ingest_and_an_embed_at_once(tmp_path, tiles):
    store = embedstore.init(tmp_path / "store")
    store.ingest([tiles], task="t", progress=False)
    more = write_tiles(tmp_path / "more", 40, seed=1, side=24)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    run_together(
        ("ingest", store.root, more, "--task", "t", "--chunk", "5", "--barrier", f"{barrier}:2"),
        ("embed", store.root, FAST, "--chunk", "8", "--barrier", f"{barrier}:2"),
    )
    assert_one_row_per_key(store)
    assert store.info()["tiles"] == 100
    embedded = set(store.catalog.read(EMB, columns=["tile_id"]).column("tile_id").to_pylist())
    assert embedded <= store.catalog.tile_ids() and len(embedded) >= 60  # the tiles the embed run saw
    store.embed(FAST, progress=False, workers=0)  # the next run picks up what was ingested meanwhile
    assert key_counts(store, EMB, "row_key") == (100, 100)


@pytest.mark.parametrize(
    "fault",
    [
        "write.before_commit:kill:1",
        "write.before_commit:kill:3",
        "write.after_commit:kill:2",
        "write.before_commit:kill:9",
    ],
)
def test_ingest_killed_at_any_commit_resumes_to_the_exact_rows(tmp_path, tiles, fault):
    store = embedstore.init(tmp_path / "store")
    killed = start(
        "ingest", store.root, tiles, "--task", "t", "--chunk", "10", env={"EMBEDSTORE_FAULT": fault}
    )
    code, _, err = finish(killed)
    assert code == -signal.SIGKILL, err
    assert key_counts(store, "tiles", "tile_id")[0] < 60
    code, out, err = finish(start("ingest", store.root, tiles, "--task", "t", "--chunk", "10"))
    assert code == 0, err
    assert_one_row_per_key(store)
    assert store.info()["tiles"] == 60 and store.info()["tasks"]["t"] == {"a": 30, "b": 30}


@pytest.mark.parametrize("fault", ["write.before_commit:kill:1", "write.before_commit:kill:3"])
def test_embed_killed_mid_run_resumes_to_the_exact_rows(tmp_path, tiles, fault):
    """Commit 1 creates the table: a kill there leaves a half-made table in staging, which the re-run
    removes (its process is gone), so check is clean without --repair."""
    store = embedstore.init(tmp_path / "store")
    store.ingest([tiles], progress=False)
    code, _, err = finish(start("embed", store.root, FAST, "--chunk", "8", env={"EMBEDSTORE_FAULT": fault}))
    assert code == -signal.SIGKILL, err
    present = key_counts(store, EMB, "row_key")[0] if store.catalog.has_table(EMB) else 0
    assert present < 60
    code, out, err = finish(start("embed", store.root, FAST, "--chunk", "8"))
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["rows_written"] == 60 - present
    assert not any((store.root / ".staging").glob("*"))  # the killed run's half-made table is gone
    assert_one_row_per_key(store)
    assert key_counts(store, EMB, "row_key") == (60, 60)


def test_two_cli_embeds_race_without_a_traceback(tmp_path, tiles):
    """As users hit it: the same command in two terminals, no coordination at all."""
    store = embedstore.init(tmp_path / "store")
    store.ingest([tiles], progress=False)
    command = [
        sys.executable,
        "-m",
        "cli.main",
        "embed",
        str(store.root),
        "--backbone",
        FAST,
        "--no-progress",
    ]
    processes = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ]
    processes.append(
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in err, err
        assert "emb__handcrafted_color_texture" in out
    assert_one_row_per_key(store)
    assert key_counts(store, EMB, "row_key") == (60, 60)


def test_two_cli_ingests_into_a_store_that_does_not_exist_yet(tmp_path, tiles):
    """Both create the store (one wins the rename, the other opens it) and both ingest."""
    store = tmp_path / "new-store"
    command = [sys.executable, "-m", "cli.main", "ingest", str(store), str(tiles), "--task", "t", "--json"]
    processes = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ]
    processes.append(
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    )
    added = 0
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in err, err
        added += json.loads(out)["tiles_added"]
    opened = embedstore.open(store)
    assert_one_row_per_key(opened)
    assert added == 60 and opened.info()["tiles"] == 60
    assert not [p for p in tmp_path.iterdir() if ".creating-" in p.name]


# -- into a big table (issue #24): the keyed path claims its keys and appends, whatever the table's size --

PREFILLED = 300_000


@pytest.fixture
def prefilled(tmp_path) -> Path:
    """An embedding table (the store's schema, row_key its key) pre-filled with PREFILLED generated rows
    by plain appends: big enough that a merge_insert per commit would scan 300,000 keys."""
    schema = embedding_schema(Provenance.given("test.prefilled", 8))
    keyed_writes.create_table(tmp_path, "emb__prefilled", schema)
    path = tmp_path / "emb__prefilled.lance"
    lance.write_dataset(generated_rows(schema, 0, PREFILLED), str(path), mode="append")
    return path


def insert(table: Path, start: int, count: int, chunk: int, barrier: str | None = None) -> tuple[str, ...]:
    command = ("insert", table, start, "--count", count, "--chunk", chunk)
    return (*command, "--barrier", barrier) if barrier else command


def assert_each_key_once(table: Path, keys: int) -> None:
    rows = lance.dataset(str(table)).to_table(columns=["row_key", "tile_id"])
    assert rows.num_rows == len(set(rows.column("row_key").to_pylist())) == keys
    assert rows.column("row_key").to_pylist()[-1].startswith(rows.column("tile_id").to_pylist()[-1])
    assert lance.dataset(str(keyed_writes.claims_path(table))).count_rows() == 0  # every claim released


def test_four_writers_over_overlapping_keys_of_a_prefilled_table_insert_each_key_once(tmp_path, prefilled):
    """Writer i inserts keys PREFILLED - 1000 + 1500 i onwards, 6,000 of them: each overlaps the next
    ones and the first overlaps rows already there; 9,500 keys are new."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    commands = [insert(prefilled, PREFILLED - 1000 + 1500 * i, 6000, 1000, f"{barrier}:4") for i in range(4)]
    reports = run_together(*commands)
    assert sum(r["inserted"] for r in reports) == 9500
    assert_each_key_once(prefilled, PREFILLED + 9500)
    values = lance.dataset(str(prefilled)).to_table(
        filter=f"row_key = '{generated_keys(PREFILLED + 9499, 1)[0]}'"
    )
    assert values.num_rows == 1 and values.column("vector").to_pylist()[0] == [(PREFILLED + 9499) % 1000] * 8


def test_a_writer_killed_holding_claims_in_a_prefilled_table_is_completed_by_two_racing_reruns(
    tmp_path, prefilled
):
    """Killed between its claims and its append (its second commit): its claims stay, dead; the re-runs
    take them over, one of them wins each key."""
    killed = start(
        *insert(prefilled, PREFILLED, 5000, 1000), env={"EMBEDSTORE_FAULT": "write.claimed:kill:2"}
    )
    code, _, err = finish(killed)
    assert code == -signal.SIGKILL, err
    assert lance.dataset(str(prefilled)).count_rows() == PREFILLED + 1000
    held = lance.dataset(str(keyed_writes.claims_path(prefilled))).to_table()
    assert held.num_rows == 1000 and len(set(held.column("owner").to_pylist())) == 1
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    command = insert(prefilled, PREFILLED, 5000, 1000, f"{barrier}:2")
    reports = run_together(command, command)
    assert sum(r["inserted"] for r in reports) == 4000
    assert_each_key_once(prefilled, PREFILLED + 5000)


def test_embed_killed_holding_its_claims_resumes_to_the_exact_rows(tmp_path, tiles):
    store = embedstore.init(tmp_path / "store")
    store.ingest([tiles], progress=False)
    fault = {"EMBEDSTORE_FAULT": "write.claimed:kill:3"}  # holding the third chunk, two are in
    code, _, err = finish(start("embed", store.root, FAST, "--chunk", "8", env=fault))
    assert code == -signal.SIGKILL, err
    present = key_counts(store, EMB, "row_key")[0]
    assert 0 < present < 60
    code, out, err = finish(start("embed", store.root, FAST, "--chunk", "8"))
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["rows_written"] == 60 - present
    assert_one_row_per_key(store)
    assert key_counts(store, EMB, "row_key") == (60, 60)
    assert lance.dataset(str(keyed_writes.claims_path(store.catalog.table_path(EMB)))).count_rows() == 0


def test_check_reports_the_claims_of_a_killed_writer_and_repair_removes_only_those(tmp_path, tiles):
    """An embed killed holding its claims leaves them, dead: check says so, repair removes them, and the
    claims of a writer still running (this process, checking from inside its own write) are never
    reported nor removed."""
    store = embedstore.init(tmp_path / "store")
    store.ingest([tiles], progress=False)
    fault = {"EMBEDSTORE_FAULT": "write.claimed:kill:2"}
    code, _, err = finish(start("embed", store.root, FAST, "--chunk", "8", env=fault))
    assert code == -signal.SIGKILL, err
    claims = keyed_writes.claims_path(store.catalog.table_path(EMB))
    assert lance.dataset(str(claims)).count_rows() == 8
    report = store.check()
    assert [(f.table, f.kind, f.count) for f in report.findings] == [(f".claims/{EMB}", "dead-claims", 8)]
    assert "died while writing" in report.summary()
    repaired = store.repair()
    assert repaired.ok, repaired.summary()
    assert [(r["table"], r["removed"]) for r in repaired.repaired] == [(f".claims/{EMB}", 8)]
    assert lance.dataset(str(claims)).count_rows() == 0

    seen = []

    def check_while_holding(table: str, rows: int) -> None:
        held = lance.dataset(str(claims)).count_rows()
        seen.append((held, store.check().findings, store.repair().repaired))

    with hooks.inject("write.claimed", check_while_holding):
        store.embed(FAST, progress=False, workers=0, chunk_rows=8)
    assert seen and all(held > 0 and findings == [] and done == [] for held, findings, done in seen)
    assert_one_row_per_key(store)
    assert key_counts(store, EMB, "row_key") == (60, 60)
