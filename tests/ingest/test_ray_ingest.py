"""`ingest --engine ray`: Ray in local mode (2 CPUs) reads the tiles and the store gets exactly the local
engine's rows; failing sources, a killed worker and bad input behave as on the local engine, or fail in
one line. Real Ray, real LanceDB, small data made here."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore.core.errors import EmbedstoreError, SourceError
from embedstore.ingest import local, ray_engine
from tests.helpers import synthetic_slide, table_versions, write_pyramid, write_tiles

ray = pytest.importorskip("ray", reason='the ray extra is not installed: pip install "embedstore[ray]"')

SLIDE = {"target_mpp": 1.0, "tile_size": 64, "min_tissue": 0.5}
KEYS = {"tiles": "tile_id", "sources": "source_id", "labels": "row_key", "files": "uri"}
STAMPS = {"ingested_at"}  # when a row was written: the one column two runs cannot share


@pytest.fixture
def paths(tmp_path: Path) -> list[Path]:
    """An image folder (classes a / b) with two byte-identical copies labelled differently, and a slide."""
    folder = write_tiles(tmp_path / "tiles", 12, seed=1)
    shutil.copy(folder / "a" / "tile_1_1.png", folder / "b" / "copy_of_tile_1_1.png")
    slide = write_pyramid(tmp_path / "slide.tif", synthetic_slide(768, 1024, seed=2)[0])
    return [folder, slide]


def _rows(store: embedstore.Store) -> dict[str, dict[str, list]]:
    """Every table ingest writes, sorted by key, as columns (write times left out)."""
    out = {}
    for table, key in KEYS.items():
        rows = sorted(store.catalog.read(table).to_pylist(), key=lambda row: row[key])
        columns = [c for c in store.catalog.read(table).column_names if c not in STAMPS]
        out[table] = {column: [row[column] for row in rows] for column in columns}
    return out


def _assert_same_rows(found: embedstore.Store, expected: embedstore.Store) -> None:
    mine, theirs = _rows(found), _rows(expected)
    for table in KEYS:
        assert mine[table].keys() == theirs[table].keys(), table
        for column, values in theirs[table].items():
            assert mine[table][column] == values, f"{table}.{column} differs"


def _ingest(store: embedstore.Store, paths: list[Path], **options):
    return store.ingest(paths, task="t", progress=False, workers=2, **{**SLIDE, **options})


def test_ray_gives_the_local_engines_rows_and_a_rerun_adds_nothing(tmp_path, paths, local_ray):
    expected = _ingest(embedstore.init(tmp_path / "local"), paths)
    store = embedstore.init(tmp_path / "ray")
    report = _ingest(store, paths, engine="ray", chunk_tiles=4)
    assert report.engine == "ray" and "read on Ray" in report.summary()
    assert report.tiles_added == expected.tiles_added > 13 and report.copies == expected.copies == 1
    assert report.label_conflicts == expected.label_conflicts and len(report.label_conflicts) == 1
    assert (report.sources_ok, report.labels_written) == (expected.sources_ok, expected.labels_written)
    _assert_same_rows(store, embedstore.open(tmp_path / "local"))
    assert store.check().ok

    versions = table_versions(store)
    again = _ingest(store, paths, engine="ray")
    assert again.tiles_added == 0 and again.sources_unchanged == 13 and table_versions(store) == versions


def _deleting_the_last_source_after_planning(monkeypatch, module) -> None:
    """The last planned source's file disappears between planning and reading (as on a busy share)."""

    def prepare(*args, **kwargs):
        run = real(*args, **kwargs)
        run.plans[-1].job.path.unlink()
        return run

    real = module.prepare
    monkeypatch.setattr(module, "prepare", prepare)


def test_a_source_failing_on_a_worker_is_recorded_as_on_the_local_engine(tmp_path, monkeypatch, local_ray):
    for name, module in (("local", local), ("ray", ray_engine)):
        folder = write_tiles(tmp_path / "tiles", 8, seed=5)  # the same files again (one is deleted)
        store = embedstore.init(tmp_path / name)
        with monkeypatch.context() as patch:
            _deleting_the_last_source_after_planning(patch, module)
            report = _ingest(store, [folder], engine=name, skip_errors=True)
        assert report.sources_ok == 7 and report.sources_failed == 1 and report.tiles_added == 7
        assert "reading tile at (0, 0) failed" in report.failures[0][1]
    _assert_same_rows(embedstore.open(tmp_path / "ray"), embedstore.open(tmp_path / "local"))


def test_without_skip_errors_a_source_failing_on_a_worker_leaves_the_store_as_it_was(
    tmp_path, paths, monkeypatch, local_ray
):
    store = embedstore.init(tmp_path / "store")
    _ingest(store, [paths[1]], engine="ray")  # the slide: the store holds something to keep
    before = _rows(store)
    folder = write_tiles(tmp_path / "more", 8, seed=6)
    _deleting_the_last_source_after_planning(monkeypatch, ray_engine)
    with pytest.raises(SourceError, match=r"reading tile at \(0, 0\) failed.*left as it was"):
        _ingest(store, [folder], engine="ray", chunk_tiles=1)  # the first 7 images were committed
    assert _rows(store) == before
    assert store.check().ok


def test_a_worker_killed_mid_run_leaves_whole_sources_and_a_rerun_completes_them(tmp_path, local_ray):
    slide = write_pyramid(tmp_path / "slide.tif", synthetic_slide(seed=7)[0])
    folder = write_tiles(tmp_path / "tiles", 40, seed=8)
    options = {"target_mpp": 0.5, "tile_size": 32, "min_tissue": 0.0}  # ~3000 tiles to read
    expected = embedstore.init(tmp_path / "local")
    _ingest(expected, [folder, slide], **options)
    store = embedstore.init(tmp_path / "ray")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = _ingest(store, [folder, slide], engine="ray", chunk_tiles=128, **options)
        except Exception as error:  # a run that gives up is allowed; a corrupt store is not
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    killed = _kill_a_reading_worker(timeout=60)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert killed, "no Ray worker was seen reading tiles"
    assert store.check().ok  # whole sources, one row per key, whatever the run did after the kill
    _ingest(store, [folder, slide], engine="ray", **options)
    _assert_same_rows(store, expected)


def _kill_a_reading_worker(timeout: float) -> bool:
    """SIGKILL one Ray worker process while it runs a reading task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"read_pieces" in title:
                os.kill(int(entry.name), signal.SIGKILL)
                return True
        time.sleep(0.01)
    return False


def test_without_ray_installed_the_engine_names_the_extra_and_writes_nothing(tmp_path, paths, monkeypatch):
    store = embedstore.init(tmp_path / "store")
    versions = table_versions(store)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(EmbedstoreError, match=r'pip install "embedstore\[ray\]"'):
        store.ingest(paths, engine="ray", progress=False)
    new = tmp_path / "new_store"
    result = CliRunner().invoke(app, ["ingest", str(new), str(paths[0]), "--engine", "ray"])
    assert result.exit_code == 2 and "embedstore[ray]" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    assert not new.exists() and table_versions(store) == versions


def test_an_unreachable_cluster_is_one_line_and_changes_nothing(tmp_path, paths):
    store = embedstore.init(tmp_path / "store")
    _ingest(store, [paths[1]])
    versions = table_versions(store)
    args = ["ingest", str(store.root), str(paths[0]), "--engine", "ray", "--address", "127.0.0.1:1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "cannot reach a Ray cluster at 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    assert table_versions(store) == versions


def test_address_without_the_ray_engine_is_refused(tmp_path, paths):
    with pytest.raises(EmbedstoreError, match="^--address .* used with --engine ray only"):
        embedstore.init(tmp_path / "store").ingest(paths, address="ray://nowhere:10001")
