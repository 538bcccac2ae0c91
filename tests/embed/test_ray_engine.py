"""`--engine ray`: Ray Data in local mode (2 CPUs) gives the local engine's rows and vectors, survives a
killed worker without duplicates, and refuses what it cannot do in one line. Real Ray, real LanceDB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore.core.errors import EmbedstoreError
from embedstore.storage.embedding_tables import table_name
from tests.helpers import write_tiles
from tests.s3_server import new_prefix

ray = pytest.importorskip("ray", reason='the ray extra is not installed: pip install "embedstore[ray]"')

KEY = "resnet18.random"  # a real CNN with seeded weights: no download
OPTS = {"progress": False, "batch_size": 8}


def _store(tmp_path: Path, name: str, n: int, seed: int = 0) -> embedstore.Store:
    """A store at tmp_path/name (or at `name` when it is a URI) with n small tiles ingested."""
    store = embedstore.init(name if "://" in name else tmp_path / name)
    store.ingest([write_tiles(tmp_path / f"tiles_{seed}", n, seed)], embedstore.IngestOptions(progress=False))
    return store


def _vectors(store: embedstore.Store, key: str = KEY) -> dict[tuple[str, int], np.ndarray]:
    table = store.catalog.read(table_name(key), columns=["tile_id", "view", "vector"])
    ids, views = table.column("tile_id").to_pylist(), table.column("view").to_pylist()
    vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
    rows = list(zip(ids, views, strict=True))
    assert len(rows) == len(set(rows)), "duplicate (tile, view) rows"
    return dict(zip(rows, vectors, strict=True))


def test_ray_engine_gives_the_local_engines_rows_and_vectors(tmp_path, local_ray):
    local = _store(tmp_path, "local", 12)
    on_ray = _store(tmp_path, "ray", 12)  # the same images: the same tile ids
    local.embed(KEY, views=1, workers=0, **OPTS)
    report = on_ray.embed(KEY, views=1, engine="ray", workers=2, chunk_rows=8, **OPTS)
    assert report.rows_written == 24 and report.tiles_embedded == 12
    assert report.engine == "ray" and "2 Ray actor(s)" in report.summary()
    [done] = report.compaction  # the automatic compaction ran after the commits (3 fragments: no merge)
    assert (done.table, done.compacted, done.fragments_after) == (table_name(KEY), False, 3)
    expected, found = _vectors(local), _vectors(on_ray)
    assert found.keys() == expected.keys() and len(found) == 24
    for row, vector in expected.items():
        np.testing.assert_allclose(found[row], vector, rtol=1e-4, atol=1e-5)
    again = on_ray.embed(KEY, views=1, engine="ray", **OPTS)  # incremental: nothing left to do
    assert again.rows_written == 0 and again.compaction == []
    assert on_ray.check().ok


def test_on_an_s3_store_ray_actors_write_the_local_engines_vectors(tmp_path, local_ray, s3):
    """Ingest and embed on Ray into a bucket: the same tiles and vectors as the local engines give in a
    local directory (the actors get the driver's S3 settings and write to the bucket themselves)."""
    tiles = write_tiles(tmp_path / "tiles", 12, seed=7)
    local, on_s3 = embedstore.init(tmp_path / "local"), embedstore.init(new_prefix())
    local.ingest([tiles], embedstore.IngestOptions(progress=False))
    on_s3.ingest([tiles], embedstore.IngestOptions(progress=False, engine="ray", workers=2))
    assert (
        on_s3.catalog.read("tiles").sort_by("tile_id").equals(local.catalog.read("tiles").sort_by("tile_id"))
    )
    local.embed(KEY, workers=0, **OPTS)
    report = on_s3.embed(KEY, engine="ray", workers=2, chunk_rows=4, **OPTS)
    assert report.rows_written == 12 and report.engine == "ray"
    expected, found = _vectors(local), _vectors(embedstore.open(str(on_s3.root)))
    assert found.keys() == expected.keys()
    for row, vector in expected.items():
        np.testing.assert_allclose(found[row], vector, rtol=1e-4, atol=1e-5)
    assert on_s3.check().ok


@pytest.mark.parametrize("on_s3", [False, True], ids=["local-dir", "s3"])
def test_a_worker_killed_mid_run_leaves_the_store_consistent_and_a_rerun_completes_it(
    tmp_path, local_ray, on_s3, request
):
    if on_s3:
        request.getfixturevalue("s3")  # the localhost S3 server
    _kill_and_resume(_store(tmp_path, new_prefix() if on_s3 else "store", 48, seed=3))


def _kill_and_resume(store: embedstore.Store) -> None:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = store.embed(KEY, engine="ray", workers=2, chunk_rows=4, **OPTS)
        except Exception as error:  # a run that gives up is allowed; a corrupt store is not
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    killed = _kill_an_actor_after_the_first_commit(store, timeout=120)
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert killed, "no EmbedBlock actor was found to kill"
    _vectors(store)  # no duplicates, whatever the run did after the kill
    assert store.check().ok
    store.embed(KEY, engine="ray", workers=2, **OPTS)
    rows = _vectors(store)
    assert {tile for tile, _ in rows} == store.catalog.tile_ids() and len(rows) == 48


def test_a_driver_killed_mid_run_leaves_whole_blocks_and_a_rerun_completes_them(tmp_path, local_ray):
    """`embedstore embed --engine ray` in a process of its own, SIGKILLed once the first block is in."""
    store = _store(tmp_path, "store", 48, seed=4)
    command = [str(Path(sys.executable).parent / "embedstore"), "embed", str(store.root), "--backbone", KEY]
    command += ["--engine", "ray", "--workers", "1", "--batch-size", "8", "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        first_block_in = _wait_for_rows(store, timeout=180, alive=lambda: driver.poll() is None)
        driver.kill()
    finally:
        driver.kill()
        _, err = driver.communicate(timeout=60)
    assert first_block_in, f"the driver ended before its first commit: {err.decode()[-500:]}"
    held = len(_vectors(store))  # whole blocks only, no duplicates
    assert 0 < held <= 48 and store.check().ok
    store.embed(KEY, engine="ray", workers=1, **OPTS)
    rows = _vectors(store)
    assert {tile for tile, _ in rows} == store.catalog.tile_ids() and len(rows) == 48


def _wait_for_rows(store: embedstore.Store, timeout: float, alive) -> bool:
    """True once the backbone's table holds a row (False when `alive()` turns false or time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if (
            store.catalog.has_table(table_name(KEY))
            and store.catalog.dataset(table_name(KEY)).count_rows() > 0
        ):
            return True
        time.sleep(0.05)
    return False


def _kill_an_actor_after_the_first_commit(store: embedstore.Store, timeout: float) -> bool:
    """SIGKILL one Ray worker process running EmbedBlock once the table holds a first block."""
    if _wait_for_rows(store, timeout, alive=lambda: True):
        for pid in _actor_pids():
            os.kill(pid, signal.SIGKILL)
            return True
    return False


def _actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"EmbedBlock" in title and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


def test_without_ray_installed_the_engine_names_the_extra(tmp_path, monkeypatch):
    store = _store(tmp_path, "store", 2)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(EmbedstoreError, match=r'pip install "embedstore\[ray\]"'):
        store.embed(KEY, engine="ray", **OPTS)
    result = CliRunner().invoke(app, ["embed", str(store.root), "--backbone", KEY, "--engine", "ray"])
    assert result.exit_code == 2 and "embedstore[ray]" in result.output
    assert "Traceback" not in result.output


def test_address_without_the_ray_engine_is_refused(tmp_path):
    store = _store(tmp_path, "store", 2)
    with pytest.raises(EmbedstoreError, match="--address"):
        store.embed(KEY, address="ray://nowhere:10001", **OPTS)


def test_an_unreachable_cluster_is_one_line_and_writes_nothing(tmp_path):
    store = _store(tmp_path, "store", 2)
    args = ["embed", str(store.root), "--backbone", KEY, "--engine", "ray", "--address", "127.0.0.1:1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "cannot reach a Ray cluster at 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output
    assert not store.catalog.has_table(table_name(KEY))


def test_a_block_that_fails_is_not_written_and_the_others_are(tmp_path, local_ray):
    from PIL import Image

    store = _store(tmp_path, "store", 16)  # stored pixels: positions 0..15
    rgb = np.random.default_rng(4).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    slide = tmp_path / "slide.png"
    Image.fromarray(rgb).save(slide)
    slide_options = {"kind": "slide", "mpp": 0.25, "target_mpp": 0.5, "tile_size": 16, "min_tissue": 0.0}
    store.ingest([slide], embedstore.IngestOptions(codec="none", progress=False, **slide_options))
    assert (
        len(store.catalog.tile_ids()) == 16 + 12
    )  # the slide's 12 tiles are read from the file when embedded
    slide.unlink()
    with pytest.raises(EmbedstoreError, match=r"^2 block\(s\) failed and were not written") as failed:
        store.embed(KEY, engine="ray", workers=2, batch_size=8, progress=False)
    assert "\n" not in str(failed.value)
    assert len(_vectors(store)) == 16  # the two blocks of stored tiles, whole
    assert store.check().ok
    Image.fromarray(rgb).save(slide)  # the file is back: a re-run completes the table
    report = store.embed(KEY, engine="ray", workers=2, batch_size=8, progress=False)
    assert report.rows_written == 12 and len(_vectors(store)) == 28
