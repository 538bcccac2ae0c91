"""Damaged tables, compaction that must free space, and a killed writer's leftovers (issue #19).

A store is damaged here as a disk, a careless `rm` or a crash would damage it: the newest manifest of
a table deleted, a data file cut to half its size, every manifest deleted. `check` must name the
damaged table and the command that restores it, `--repair` must not delete rows because of it, `info`
must say so, and reading commands must fail in one line. Compaction must never grow a store without
saying why, and report the bytes it really freed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore.core.location import tree_size
from tests.helpers import key_counts, table_versions, write_tiles

FAST = "handcrafted.color_texture"
EMB = "emb__handcrafted_color_texture"
ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def restore_command(output: str, table: str) -> list[str]:
    """The `embedstore versions STORE --table T --restore N` command that check printed, as arguments."""
    found = re.search(rf"`embedstore (versions \S+ --table {table} --restore \d+)`", output)
    assert found, output
    return found.group(1).split()


def manifest(store: embedstore.Store, table: str, version: int) -> Path:
    """The manifest file of one version (Lance names them by version, or by u64::MAX - version)."""
    folder = store.catalog.table_path(table) / "_versions"
    for name in (f"{2**64 - 1 - version}.manifest", f"{version}.manifest"):
        if (folder / name).exists():
            return folder / name
    raise AssertionError(f"no manifest of {table} v{version} in {sorted(p.name for p in folder.iterdir())}")


def newest_data_file(store: embedstore.Store, table: str) -> Path:
    fragment = store.catalog.dataset(table).get_fragments()[-1]
    return store.catalog.table_path(table) / "data" / fragment.metadata.files[0].path


def row_counts(store: embedstore.Store, tables: list[str]) -> dict[str, int]:
    return {name: store.catalog.dataset(name).count_rows() for name in tables}


def versions_of(store: embedstore.Store, tables: list[str]) -> dict[str, int]:
    return {name: int(store.catalog.dataset(name).version) for name in tables}


@pytest.fixture
def store(tmp_path) -> embedstore.Store:
    """8 tiles labelled for task t, embedded in two commits (4, then 4), so each table has history."""
    store = embedstore.init(tmp_path / "store")
    store.ingest([write_tiles(tmp_path / "tiles", 8, seed=0)], task="t", progress=False)
    store.embed(FAST, progress=False, workers=0, limit=4)
    store.embed(FAST, progress=False, workers=0)
    assert store.check().ok
    return store


# -- compaction -------------------------------------------------------------------------------------------


def test_compact_on_a_fresh_store_does_not_grow_it_and_says_why_nothing_was_merged(store):
    before = tree_size(store.root)
    versions = table_versions(store)
    result = run("compact", store.root, "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert tree_size(store.root) <= before
    assert table_versions(store) == versions
    assert f"{EMB}: 3 -> 3 version(s)" in result.output
    assert "fragments not merged: 3 version(s) younger than 7d would keep the current files" in result.output
    assert "0 B freed" in result.output


def test_compact_json_reports_the_bytes_measured_on_disk(store):
    before = {name: tree_size(store.catalog.table_path(name)) for name in store.catalog.table_names()}
    report = json.loads(run("compact", store.root, "--older-than", "7d", "--json").output)
    assert {name: t["bytes_before"] for name, t in report["tables"].items()} == before
    assert all(
        t["bytes_after"] == t["bytes_before"] and t["bytes_freed"] == 0 for t in report["tables"].values()
    )


def test_compact_after_old_versions_frees_bytes_and_reports_what_it_freed(store):
    rows = row_counts(store, store.catalog.table_names())
    vectors = store.embeddings(FAST).to_numpy()
    before = tree_size(store.root)
    report = store.compact(older_than="0s")
    after = tree_size(store.root)
    assert after < before
    freed = sum(t.bytes_freed for t in report.tables.values())
    assert freed == before - after
    assert sum(t["bytes_freed"] for t in report.to_dict()["tables"].values()) == freed
    emb = report.tables[EMB]
    assert (emb.versions_before, emb.versions_after, emb.compacted) == (3, 1, True)
    assert len(store.catalog.dataset(EMB).get_fragments()) == 1
    assert row_counts(store, store.catalog.table_names()) == rows
    again = store.embeddings(FAST).to_numpy()
    assert sorted(again.tile_ids) == sorted(vectors.tile_ids)
    assert store.check().ok


def test_a_tagged_version_keeps_the_fragments_unmerged_and_the_report_says_so(store):
    store.tag(EMB, "first", version=2)
    size = tree_size(store.catalog.table_path(EMB))
    report = store.compact(older_than="0s")
    emb = report.tables[EMB]
    assert not emb.compacted and "1 tagged version(s) would keep the current files" in emb.note
    assert tree_size(store.catalog.table_path(EMB)) <= size
    assert store.catalog.read(EMB, version="first").num_rows == 4
    assert "tagged version(s)" in report.summary()


@pytest.mark.parametrize("duration", ["99999999999999d", "36501d", "9999999999w"])
def test_an_older_than_beyond_100_years_is_one_line_and_changes_nothing(store, duration):
    before, versions = tree_size(store.root), table_versions(store)
    result = run("compact", store.root, "--older-than", duration)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"error: --older-than '{duration}' is longer than 36500d (100 years); no version is that old"
    ]
    assert (tree_size(store.root), table_versions(store)) == (before, versions)


# -- a damaged table ---------------------------------------------------------------------------------------


def test_newest_tiles_manifest_removed_is_reported_and_repair_deletes_nothing_elsewhere(store, tmp_path):
    more = write_tiles(tmp_path / "more", 4, seed=1)
    store.ingest([more], task="t", progress=False)
    store.embed(FAST, progress=False, workers=0)
    manifest(store, "tiles", store.catalog.dataset("tiles").version).unlink()
    others = ["labels", "files", EMB]
    rows, versions = row_counts(store, others), table_versions(store)

    found = run("check", store.root)
    assert found.exit_code == 1 and "Traceback" not in found.output
    assert re.search(r"problem tiles: DAMAGED: its newest version \d+ is missing", found.output)
    assert "orphans of labels, emb__handcrafted_color_texture not checked" in found.output
    assert "problem labels" not in found.output and f"problem {EMB}" not in found.output
    restore_command(found.output, "tiles")

    repaired = run("check", store.root, "--repair")
    assert repaired.exit_code == 1 and "Traceback" not in repaired.output
    assert "nothing to repair; nothing was written" in repaired.output
    assert row_counts(store, others) == rows and table_versions(store) == versions


def test_a_commit_made_while_check_runs_is_not_taken_for_a_missing_newest_version(store, tmp_path):
    from embedstore.storage.damage import missing_newest_version

    opened = int(store.catalog.dataset("tiles").version)  # check opened the table here, then a writer commits
    store.ingest([write_tiles(tmp_path / "later", 2, seed=3)], task="t", progress=False)
    assert int(store.catalog.dataset("tiles").version) > opened
    assert missing_newest_version(store.catalog, "tiles", opened) is None


def test_the_printed_restore_then_the_same_ingest_make_the_store_whole_again(store, tmp_path):
    more = write_tiles(tmp_path / "more", 4, seed=1)
    store.ingest([more], task="t", progress=False)
    manifest(store, "tiles", store.catalog.dataset("tiles").version).unlink()
    restored = run(*restore_command(run("check", store.root).output, "tiles"))
    assert restored.exit_code == 0, restored.output
    after = run("check", store.root)
    assert "DAMAGED" not in after.output and "run the same `embedstore ingest` again" in after.output
    store.ingest([more], task="t", progress=False)
    assert run("check", store.root).exit_code == 0
    assert key_counts(store, "tiles", "tile_id") == (12, 12)


def test_a_truncated_embedding_file_is_found_by_check_and_info_and_restore_fixes_it(store):
    data = newest_data_file(store, EMB)
    os.truncate(data, data.stat().st_size // 2)
    others = ["sources", "tiles", "labels", "files"]
    rows, versions = row_counts(store, others), table_versions(store)

    info = run("info", store.root)
    assert info.exit_code == 0 and "Traceback" not in info.output
    assert f"{EMB}: DAMAGED: fragment 1 does not read" in info.output
    assert "its manifest records" in info.output

    found = run("check", store.root)
    assert found.exit_code == 1 and "Traceback" not in found.output
    assert f"problem {EMB}: DAMAGED" in found.output
    command = restore_command(found.output, EMB)
    assert command[-1] == "2"  # the version with the first 4 vectors, whose file is whole

    repaired = run("check", store.root, "--repair")
    assert repaired.exit_code == 1 and row_counts(store, others) == rows
    assert table_versions(store) == versions

    assert run(*command).exit_code == 0
    assert run("check", store.root).exit_code == 0
    assert store.catalog.dataset(EMB).count_rows() == 4


def test_a_search_on_a_damaged_embedding_table_is_one_line_with_exit_code_2(store):
    data = newest_data_file(store, EMB)
    os.truncate(data, data.stat().st_size // 2)
    tile = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id")[0].as_py()
    result = run("search", store.root, "--backbone", FAST, "--tile", tile, "-k", "3")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: table '{EMB}' is damaged: its files do not read")
    assert f"run `embedstore check {store.root}`" in lines[0]


def test_a_corrupt_file_of_the_same_size_is_found_by_the_scan_of_check(store):
    data = newest_data_file(store, EMB)
    content = bytearray(data.read_bytes())
    content[: len(content) // 2] = bytes(len(content) // 2)
    data.write_bytes(bytes(content))
    found = run("check", store.root)
    assert found.exit_code == 1 and "Traceback" not in found.output
    assert f"problem {EMB}: DAMAGED: fragment 1 does not read" in found.output
    with pytest.raises(embedstore.TableDamagedError, match=f"table '{EMB}' is damaged"):
        store.embeddings(FAST).to_numpy()


def test_all_manifests_removed_is_reported_without_a_traceback(store):
    for path in (store.catalog.table_path(EMB) / "_versions").glob("*.manifest"):
        path.unlink()
    others = ["sources", "tiles", "labels", "files"]
    rows, versions = row_counts(store, others), versions_of(store, others)

    info = run("info", store.root)
    assert info.exit_code == 0 and "Traceback" not in info.output
    assert f"{EMB}: DAMAGED: no version of it is left" in info.output

    found = run("check", store.root)
    assert found.exit_code == 1 and "Traceback" not in found.output
    assert f"problem {EMB}: DAMAGED: no version of it is left" in found.output
    assert "remove that folder and run `embedstore embed" in found.output

    assert run("check", store.root, "--repair").exit_code == 1
    assert row_counts(store, others) == rows and versions_of(store, others) == versions

    search = run("search", store.root, "--backbone", FAST, "--tile", "x", "-k", "3")
    assert search.exit_code == 2 and len(search.output.strip().splitlines()) == 1
    assert f"table '{EMB}' is damaged: it does not open" in search.output

    shutil.rmtree(store.catalog.table_path(EMB))  # the fix check named
    store.embed(FAST, progress=False, workers=0)
    assert run("check", store.root).exit_code == 0


def test_a_damaged_labels_table_is_not_fine_in_info(store):
    for path in (store.catalog.table_path("labels") / "_versions").glob("*.manifest"):
        path.unlink()
    info = store.info()
    assert info["damaged"] == ["labels"] and info["tasks"] is None
    assert info["tiles"] == 8 and info["tables"]["tiles"]["rows"] == 8
    assert "tasks   unreadable: its table is damaged" in run("info", store.root).output


# -- a writer killed while creating a table --------------------------------------------------------------


def writer(store: embedstore.Store, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"EMBEDSTORE_FAULT": fault} if fault else {})}
    command = [sys.executable, "-m", "tests.writer_process", "embed", str(store.root), FAST, "--chunk", "4"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_a_rerun_after_a_kill_at_table_creation_leaves_check_clean(tmp_path):
    store = embedstore.init(tmp_path / "store")
    store.ingest([write_tiles(tmp_path / "tiles", 8, seed=0)], progress=False)
    killed = writer(store, "write.before_commit:kill:1")
    assert killed.returncode == -9, killed.stderr
    assert len(list((store.root / ".staging").iterdir())) == 1  # the half-made table
    assert run("check", store.root).exit_code == 1

    rerun = writer(store)
    assert rerun.returncode == 0, rerun.stderr
    result = run("check", store.root)
    assert result.exit_code == 0, result.output
    assert list((store.root / ".staging").iterdir()) == []
    assert key_counts(store, EMB, "row_key") == (8, 8)


def test_repair_of_a_leftover_says_what_it_removed_and_spares_a_table_being_created(store):
    staging = store.root / ".staging"
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = staging / f"emb__x~{socket.gethostname()}~{gone.pid}~0.lance"
    running = staging / f"emb__y~{socket.gethostname()}~{os.getpid()}~0.lance"
    for path in (leftover, running):
        path.mkdir(parents=True)

    found = run("check", store.root)
    assert found.exit_code == 1 and "problem .staging: 1 half-created table(s)" in found.output
    assert "1 table(s) being created by running processes" in found.output

    repaired = run("check", store.root, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "repaired .staging: 1 half-created table(s) removed" in repaired.output
    assert "None" not in repaired.output
    assert not leftover.exists() and running.exists()
