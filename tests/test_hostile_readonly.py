"""Hostile input, read-only part: stores this user may not write, `init` where nothing can be made,
ingest re-runs, and the CLI's last resort for errors that are not embedstore's own.

A read-only store is made the way users meet it: its files belong to someone else, or the mount is
read-only. The tests remove write permission (chmod a-w) and run the real `embedstore` in a subprocess;
as root, which ignores permissions, that subprocess first gives up the capabilities that let root
write anyway (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), so the permission bits apply as
they would to any user (running as `nobody` instead would need an interpreter that user can reach).
Where a write into a read-only folder still succeeds (root, and no capability to drop), those tests
skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import embedstore
from cli.main import BUG_EXIT_CODE, app
from embedstore.core.schema import SOURCES
from tests.helpers import write_image, write_tiles

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "handcrafted.color_texture"
TASK = "tissue"
HEAD = "h"
_PR_CAPBSET_DROP = 24
_WRITE_ANYWAY_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


# Run in a fresh interpreter (not in a forked copy of this one, which holds Lance's threads): as root,
# give up the capabilities that bypass file permissions, then exec the command.
_AS_A_PLAIN_USER = f"""
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in {_WRITE_ANYWAY_CAPABILITIES}:
        if libc.prctl({_PR_CAPBSET_DROP}, capability, 0, 0, 0) != 0:
            sys.exit("prctl(PR_CAPBSET_DROP) refused: " + os.strerror(ctypes.get_errno()))
os.execvp(sys.argv[1], sys.argv[1:])
"""


def as_a_plain_user(*command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`command` in a subprocess that file permissions bind even when this test runs as root."""
    return subprocess.run(
        [sys.executable, "-c", _AS_A_PLAIN_USER, *map(str, command)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def embedstore_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`embedstore ARGS` (this worktree's code) in a subprocess that file permissions bind."""
    inherited = {name: value for name, value in os.environ.items() if name != "EMBEDSTORE_DEBUG"}
    environment = {**inherited, "PYTHONPATH": str(REPO), **(env or {})}
    return as_a_plain_user(sys.executable, "-m", "cli.main", *args, env=environment)


def set_writable(root: Path, writable: bool) -> None:
    """chmod u+w / a-w over a whole tree (folders keep r-x, so it stays readable)."""
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture(scope="module")
def permissions_bind(tmp_path_factory) -> None:
    """Skip unless a subprocess of this test is refused a write into a read-only folder."""
    folder = tmp_path_factory.mktemp("probe")
    (folder / "closed").mkdir(mode=0o555)
    probe = as_a_plain_user(sys.executable, "-c", f"open({str(folder / 'closed' / 'file')!r}, 'w')")
    if probe.returncode == 0:
        pytest.skip("file permissions do not bind subprocesses here (root, and no capability to drop)")
    if "PermissionError" not in probe.stderr:
        pytest.skip(f"cannot run a subprocess bound by file permissions here: {probe.stderr.strip()}")


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> sha256 of its bytes)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str, code: int = 2) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def read_only_store(tmp_path_factory, permissions_bind) -> Iterator[Path]:
    """A complete store (tiles with labels, embeddings, an index, a head), then made read-only."""
    scratch = tmp_path_factory.mktemp("readonly")
    store = embedstore.init(scratch / "store")
    store.ingest([write_tiles(scratch / "tiles", 12, seed=1)], task=TASK, progress=False)
    store.embed(BACKBONE, progress=False)
    store.index(BACKBONE)
    import heads

    heads.train(store, BACKBONE, TASK, name=HEAD, epochs=2)
    write_tiles(scratch / "more", 4, seed=2)
    first_tile = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id")[0].as_py()
    (scratch / "labels.csv").write_text(f"tile_id,label\n{first_tile},a\n")
    set_writable(store.root, False)
    yield store.root
    set_writable(store.root, True)


def writing_commands(root: Path) -> dict[str, list[str]]:
    scratch = root.parent
    return {
        "ingest": ["ingest", root, scratch / "more", "--no-progress"],
        "embed": ["embed", root, "--backbone", "resnet18.random", "--no-progress"],
        "labels import": ["labels", "import", root, "--task", "other", scratch / "labels.csv"],
        "index": ["index", root, "--backbone", BACKBONE, "--name", "another"],
        "train-head": ["train-head", root, "--backbone", BACKBONE, "--task", TASK, "--name", "h2"],
        "predict": ["predict", root, "--head", HEAD, "--no-progress"],
        "compact": ["compact", root, "--older-than", "0s"],
        "versions --tag": ["versions", root, "--table", "tiles", "--tag", "keep"],
        "versions --restore": ["versions", root, "--table", "tiles", "--restore", "1"],
        "check --repair": ["check", root, "--repair"],
    }


@pytest.mark.parametrize("command", list(writing_commands(Path("/store"))))
def test_a_writing_command_on_a_read_only_store_says_so_in_one_line_and_changes_nothing(
    read_only_store: Path, command: str
):
    before = snapshot(read_only_store)
    done = embedstore_cli(*writing_commands(read_only_store)[command])
    assert_one_line_error(done, "read-only", str(read_only_store), "chmod/chown", "copy")
    assert snapshot(read_only_store) == before


def search_read_only(root: Path, tile: str, k: int):
    """`embedstore search` run while the store is read-only: (the run, a snapshot from just before it)."""
    set_writable(root, False)
    before = snapshot(root)
    try:
        done = embedstore_cli("search", root, "--backbone", BACKBONE, "--tile", tile, "-k", str(k))
    finally:
        set_writable(root, True)
    return done, before


def test_search_that_would_build_the_first_index_of_a_read_only_store_is_refused(
    tmp_path: Path, permissions_bind
):
    store = embedstore.init(tmp_path / "store")
    store.ingest([write_tiles(tmp_path / "tiles", 6, seed=3)], progress=False)
    store.embed(BACKBONE, progress=False)
    tile = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id")[0].as_py()
    done, before = search_read_only(store.root, tile, 2)
    assert_one_line_error(done, "read-only", str(store.root))
    assert snapshot(store.root) == before


def test_read_only_commands_keep_working_on_a_read_only_store(read_only_store: Path):
    before = snapshot(read_only_store)
    info = embedstore_cli("info", read_only_store, "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["tiles"] == 12
    check = embedstore_cli("check", read_only_store)
    assert check.returncode == 0 and "no problems" in check.stdout, check.stderr
    versions = embedstore_cli("versions", read_only_store, "--table", "tiles", "--json")
    assert versions.returncode == 0 and len(json.loads(versions.stdout)) >= 1, versions.stderr
    tile = (
        embedstore.open(read_only_store)
        .catalog.read("tiles", columns=["tile_id"])
        .column("tile_id")[0]
        .as_py()
    )
    search = embedstore_cli("search", read_only_store, "--backbone", BACKBONE, "--tile", tile, "-k", "3")
    assert search.returncode == 0 and len(search.stdout.splitlines()) == 1 + 3, search.stderr  # header + hits
    assert search.stdout.startswith("rank"), search.stdout
    probe = embedstore_cli("probe", read_only_store, "--task", TASK, "--folds", "2", "--seeds", "1")
    assert probe.returncode == 0 and BACKBONE in probe.stdout, probe.stderr
    assert snapshot(read_only_store) == before


def test_search_on_a_read_only_store_adds_rows_embedded_since_its_index_in_memory(
    tmp_path: Path, permissions_bind
):
    store = embedstore.init(tmp_path / "store")
    store.ingest([write_tiles(tmp_path / "first", 6, seed=10)], progress=False)
    store.embed(BACKBONE, progress=False)
    store.index(BACKBONE)
    indexed = set(store.catalog.read("tiles", columns=["tile_id"]).column("tile_id").to_pylist())
    store.ingest([write_tiles(tmp_path / "later", 2, seed=11)], progress=False)
    store.embed(BACKBONE, progress=False)
    later = sorted(
        set(store.catalog.read("tiles", columns=["tile_id"]).column("tile_id").to_pylist()) - indexed
    )
    done, before = search_read_only(store.root, later[0], 8)
    assert done.returncode == 0 and "added 2 rows" in done.stderr, done.stderr
    assert later[1] in done.stdout
    assert snapshot(store.root) == before


def test_a_store_with_one_read_only_table_names_that_table_and_nothing_is_written(
    tmp_path: Path, permissions_bind
):
    store = embedstore.init(tmp_path / "store")
    set_writable(store.catalog.table_path("labels"), False)
    tiles = write_tiles(tmp_path / "tiles", 4, seed=4)
    before = snapshot(store.root)
    try:
        done = embedstore_cli("ingest", store.root, tiles, "--task", TASK, "--no-progress")
    finally:
        set_writable(store.catalog.table_path("labels"), True)
    assert_one_line_error(done, "read-only", "labels.lance")
    assert snapshot(store.root) == before


def test_upgrade_of_a_read_only_format_1_store_is_refused_and_changes_nothing(
    tmp_path: Path, permissions_bind
):
    from tests.test_upgrade import downgrade_to_format_1

    store = embedstore.init(tmp_path / "old")
    store.ingest([write_tiles(tmp_path / "tiles", 4, seed=12)], task=TASK, progress=False)
    store.embed(BACKBONE, progress=False)
    downgrade_to_format_1(store)
    set_writable(store.root, False)
    before = snapshot(store.root)
    try:
        done = embedstore_cli("upgrade", store.root)
    finally:
        set_writable(store.root, True)
    assert_one_line_error(done, "read-only", str(store.root))
    assert snapshot(store.root) == before


def test_init_in_a_read_only_folder_is_refused_in_one_line_and_creates_nothing(
    tmp_path: Path, permissions_bind
):
    parent = tmp_path / "closed"
    parent.mkdir(mode=0o555)
    for target in (parent / "store", parent / "deeper" / "store"):
        done = embedstore_cli("init", target)
        assert_one_line_error(done, "cannot create a store", str(parent), "read-only")
    assert list(parent.iterdir()) == []


def test_ingest_into_a_new_path_in_a_read_only_folder_is_refused_and_creates_nothing(
    tmp_path: Path, permissions_bind
):
    tiles = write_tiles(tmp_path / "tiles", 2, seed=5)
    parent = tmp_path / "closed"
    parent.mkdir(mode=0o555)
    done = embedstore_cli("ingest", parent / "store", tiles, "--no-progress")
    assert_one_line_error(done, "cannot create a store", "read-only")
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("name", ["with\nnewline", "with\ttab", "with\rreturn"])
def test_init_of_a_path_with_a_control_character_is_refused_in_one_line(tmp_path: Path, name: str):
    result = CliRunner().invoke(app, ["init", str(tmp_path / name)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "control character" in result.output
    assert list(tmp_path.iterdir()) == []


def test_ingest_into_a_path_that_is_no_store_yet_says_it_created_one(tmp_path: Path):
    tiles = write_tiles(tmp_path / "tiles", 2, seed=6)
    target = tmp_path / "new" / "store"
    first = CliRunner().invoke(app, ["ingest", str(target), str(tiles), "--no-progress"])
    assert first.exit_code == 0, first.output
    assert f"created a new store at {target}" in first.output
    again = CliRunner().invoke(app, ["ingest", str(target), str(tiles), "--no-progress"])
    assert again.exit_code == 0 and "created a new store" not in again.output


def test_ingest_json_keeps_stdout_json_when_it_creates_a_store(tmp_path: Path):
    tiles = write_tiles(tmp_path / "tiles", 2, seed=7)
    target = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "ingest", str(target), str(tiles), "--no-progress", "--json"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tiles_added"] == 2
    assert f"created a new store at {target}" in done.stderr


def test_rerunning_ingest_skip_errors_with_the_same_failures_writes_no_version(tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        write_image(folder / f"good_{i}.png", 32, seed=i)
    (folder / "broken.png").write_bytes(b"not an image")
    store = embedstore.init(tmp_path / "store")
    arguments = ["ingest", str(store.root), str(folder), "--kind", "images", "--skip-errors", "--no-progress"]
    first = CliRunner().invoke(app, arguments)
    assert first.exit_code == 0, first.output
    failed = store.catalog.read(SOURCES, filter="status = 'failed'").to_pylist()
    assert len(failed) == 1 and "broken.png" in failed[0]["uri"]
    versions = {name: len(store.versions(name)) for name in store.catalog.table_names()}
    for _ in range(2):
        again = CliRunner().invoke(app, arguments)
        assert again.exit_code == 0 and "broken.png" in again.output
    assert {name: len(store.versions(name)) for name in store.catalog.table_names()} == versions
    assert store.catalog.read(SOURCES, filter="status = 'failed'").to_pylist() == failed


def test_a_source_failing_anew_on_a_rerun_is_recorded(tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    broken = folder / "broken.png"
    broken.write_bytes(b"not an image")
    store = embedstore.init(tmp_path / "store")
    store.ingest([folder], kind="images", skip_errors=True, progress=False)
    versions = len(store.versions(SOURCES))
    broken.write_bytes(b"")  # same path, other content: another failure to record
    report = store.ingest([folder], kind="images", skip_errors=True, progress=False)
    assert report.sources_failed == 1
    assert len(store.versions(SOURCES)) == versions + 1
    assert store.catalog.count(SOURCES) == 2


def test_a_write_refused_outside_the_store_is_one_line_naming_the_path(read_only_store: Path, tmp_path):
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o555)
    tile = (
        embedstore.open(read_only_store)
        .catalog.read("tiles", columns=["tile_id"])
        .column("tile_id")[0]
        .as_py()
    )
    export = closed / "hits.csv"
    done = embedstore_cli(
        "search", read_only_store, "--backbone", BACKBONE, "--tile", tile, "-k", "2", "--export", export
    )
    # output files are checked before the work (validation.output_file): refused before searching
    assert_one_line_error(done, "--export", str(closed), "may not write")
    assert not export.exists()


def test_a_write_the_system_refuses_reads_as_permission_denied_naming_the_path():
    """The last resort (cli.main) for a refusal no check foresaw: one line naming the path and the fix."""
    from embedstore.core.errors import os_error_line

    line = os_error_line(PermissionError(13, "Permission denied", "/data/store/x.lance"))
    assert line is not None and line.startswith("permission denied: /data/store/x.lance")
    assert "chmod/chown" in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full to stand for a full disk")
def test_a_full_disk_is_one_line_saying_so(read_only_store: Path):
    tile = (
        embedstore.open(read_only_store)
        .catalog.read("tiles", columns=["tile_id"])
        .column("tile_id")[0]
        .as_py()
    )
    done = embedstore_cli(
        "search", read_only_store, "--backbone", BACKBONE, "--tile", tile, "-k", "2", "--export", "/dev/full"
    )
    assert_one_line_error(done, "no space left on device")


def test_an_unexpected_error_is_one_line_marked_as_a_bug_with_its_own_exit_code(tmp_path: Path):
    store = embedstore.init(tmp_path / "store")
    fault = {"EMBEDSTORE_FAULT": "write.before_commit:raise:1"}
    done = embedstore_cli(
        "ingest", store.root, write_tiles(tmp_path / "t", 2, seed=8), "--no-progress", env=fault
    )
    assert_one_line_error(done, "InjectedFault", "this is a bug", "EMBEDSTORE_DEBUG=1", code=BUG_EXIT_CODE)
    debug = embedstore_cli(
        "ingest", store.root, tmp_path / "t", "--no-progress", env={**fault, "EMBEDSTORE_DEBUG": "1"}
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "InjectedFault" in debug.stderr


def test_memory_errors_read_as_out_of_memory_with_the_fix():
    from embedstore.core.errors import os_error_line

    for error in (MemoryError(), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")):
        line = os_error_line(error)
        assert line is not None and line.startswith("out of memory") and "--batch-size" in line
    assert os_error_line(RuntimeError("shape mismatch")) is None


def test_a_store_on_object_storage_with_read_only_credentials_refuses_writes_in_one_line(s3, tmp_path):
    """The server's access-denied answer, for every writing verb, before any work; reading works."""
    import boto3
    from moto.core.authorization import enable_iam_authentication

    from embedstore.core.errors import ReadOnlyStoreError
    from tests.s3_server import BUCKET, new_prefix

    store = embedstore.init(new_prefix())
    store.ingest([write_tiles(tmp_path / "tiles", 4, seed=9)], task=TASK, progress=False)
    tile = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id")[0].as_py()
    (tmp_path / "labels.csv").write_text(f"tile_id,label\n{tile},a\n")
    prefix = str(store.root).split(f"{BUCKET}/", 1)[1]
    objects = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    reader = read_only_credentials(s3)
    with enable_iam_authentication(), pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", reader["AccessKeyId"])
        env.setenv("AWS_SECRET_ACCESS_KEY", reader["SecretAccessKey"])
        opened = embedstore.open(store.root)
        assert opened.info()["tiles"] == 4 and opened.check().ok
        writes = {
            "ingest": lambda: opened.ingest([tmp_path / "tiles"], progress=False),
            "labels": lambda: opened.import_labels("other", tmp_path / "labels.csv"),
            "tag": lambda: opened.tag("tiles", "keep"),
            "compact": lambda: opened.compact("0s"),
        }
        for verb, write in writes.items():
            with pytest.raises(ReadOnlyStoreError, match="read-only for these credentials") as refused:
                write()
            assert "\n" not in str(refused.value), verb
        cli = CliRunner().invoke(
            app, ["labels", "import", str(store.root), "--task", "x", str(tmp_path / "labels.csv")]
        )
        assert cli.exit_code == 2 and cli.output.count("\n") == 1 and "read-only" in cli.output
    after = boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    assert [(o["Key"], o["ETag"]) for o in after] == [(o["Key"], o["ETag"]) for o in objects]


def read_only_credentials(endpoint: str) -> dict[str, str]:
    """An access key of a new IAM user who may read the test bucket but not write it."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint)
    name = f"reader-{os.getpid()}-{len(iam.list_users()['Users'])}"
    iam.create_user(UserName=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*", "s3:Head*"], "Resource": "*"}],
    }
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
    return iam.create_access_key(UserName=name)["AccessKey"]
