"""The keyed write path on its own: insert what is missing, upsert, delete, tables made once, retries,
claims (taken over from dead writers, waited for from running ones) and the per-process key set."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import lance
import pyarrow as pa
import pytest

from embedstore import EmbedstoreError
from embedstore.core.schema import key_field
from embedstore.storage import keyed_writes as writes

SCHEMA = pa.schema([key_field("k"), pa.field("v", pa.int64())])


def rows(keys, value=0):
    return pa.table({"k": keys, "v": [value] * len(keys)}, schema=SCHEMA)


@pytest.fixture
def table(tmp_path):
    writes.create_table(tmp_path, "t", SCHEMA)
    return tmp_path / "t.lance"


def test_insert_missing_skips_present_keys_and_duplicates_within_a_batch(table):
    assert writes.insert_missing(table, "t", rows(["a", "b"])) == 2
    assert writes.insert_missing(table, "t", rows(["b", "c", "c"])) == 1
    assert sorted(lance.dataset(str(table)).to_table().column("k").to_pylist()) == ["a", "b", "c"]


def test_upsert_replaces_and_delete_removes(table):
    writes.insert_missing(table, "t", rows(["a", "b"]))
    assert writes.upsert(table, "t", rows(["b", "c"], value=7)) == (1, 1)
    values = dict(zip(*lance.dataset(str(table)).to_table().to_pydict().values(), strict=True))
    assert values == {"a": 0, "b": 7, "c": 7}
    assert writes.delete_where(table, "t", "k IN ('a', 'c')") == 2


def test_a_table_is_created_once(tmp_path):
    first = writes.create_table(tmp_path, "t", SCHEMA)
    writes.insert_missing(first.uri, "t", rows(["a"]))
    again = writes.create_table(tmp_path, "t", pa.schema([key_field("other")]))  # exists: opened, untouched
    assert again.schema.names == ["k", "v"] and again.count_rows() == 1
    assert not any((tmp_path / writes.STAGING_DIR).iterdir())


def test_a_table_without_a_declared_key_is_refused(tmp_path):
    lance.write_dataset(pa.table({"k": ["a"]}), str(tmp_path / "old.lance"))
    with pytest.raises(EmbedstoreError, match="declares no key column .*`embedstore upgrade STORE`"):
        writes.insert_missing(tmp_path / "old.lance", "old", pa.table({"k": ["b"]}))


def test_commits_that_keep_conflicting_are_retried_and_other_errors_are_not():
    attempts = []

    def conflicting_twice():
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("Retryable commit conflict for version 7")
        return "done"

    assert writes._retrying(conflicting_twice) == "done" and len(attempts) == 3

    def broken():
        attempts.append(1)
        raise OSError("disk full")

    attempts.clear()
    with pytest.raises(OSError, match="disk full"):
        writes._retrying(broken)
    assert len(attempts) == 1


# -- claims and the key set (issue #24): the keyed path no longer scans the table -----------------------


def claims(table):
    return lance.dataset(str(writes.claims_path(table))).to_table().to_pylist()


def claim_rows(keys, owner, age_minutes=0.0):
    at = datetime.now(UTC) - timedelta(minutes=age_minutes)
    return pa.Table.from_pylist(
        [{"key": k, "owner": owner, "claimed_at": at} for k in keys], schema=writes.CLAIMS_SCHEMA
    )


def hold(table, keys, owner, age_minutes=0.0):
    """Claims of `keys` by `owner`, as a writer that holds them (or died holding them) left them."""
    writes.insert_missing(table, "t", rows(["warm-up"]))  # makes the claims table
    lance.write_dataset(claim_rows(keys, owner, age_minutes), str(writes.claims_path(table)), mode="append")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_every_write_releases_its_claims(table):
    assert writes.insert_missing(table, "t", rows(["a", "b"], value=1)) == 2
    assert writes.upsert(table, "t", rows(["b", "c"], value=2)) == (1, 1)
    assert claims(table) == []
    assert writes.claims_path(table) == table.parent / ".claims" / "t.lance"
    values = dict(zip(*lance.dataset(str(table)).to_table().to_pydict().values(), strict=True))
    assert values == {"a": 1, "b": 2, "c": 2}


def test_a_dead_writers_claims_are_taken_over(table):
    hold(table, ["a", "b"], f"{socket.gethostname()}~{dead_pid()}~~dead")
    assert writes.insert_missing(table, "t", rows(["a", "b", "c"])) == 3
    assert claims(table) == []
    assert lance.dataset(str(table)).count_rows() == 4


def test_a_running_writers_claims_are_waited_for(table):
    me = f"{socket.gethostname()}~{os.getpid()}~{writes._process_start(os.getpid())}~running"
    hold(table, ["a"], me)

    def finish_the_other_write():  # as the running writer does: append its row, then release
        time.sleep(0.5)
        lance.write_dataset(rows(["a"], value=9), str(table), mode="append")
        lance.dataset(str(writes.claims_path(table))).delete(f"owner = '{me}'")

    other = threading.Thread(target=finish_the_other_write)
    other.start()
    started = time.monotonic()
    assert writes.insert_missing(table, "t", rows(["a", "b"])) == 1  # b at once, a found written
    other.join()
    assert time.monotonic() - started >= 0.4
    values = dict(zip(*lance.dataset(str(table)).to_table().to_pydict().values(), strict=True))
    assert values == {"warm-up": 0, "a": 9, "b": 0} and claims(table) == []


def test_another_hosts_claims_are_taken_over_after_the_lease_only(table):
    hold(table, ["a"], "elsewhere~1~~x", age_minutes=writes.CLAIM_LEASE.total_seconds() / 60 + 1)
    hold(table, ["b"], "elsewhere~2~~y")
    assert writes.remove_dead_claims(table) == 1
    assert [c["key"] for c in claims(table)] == ["b"]


def test_a_dead_writers_claims_of_rows_it_wrote_are_removed_at_the_next_process_first_write(table):
    """Killed after its append, before its release: its keys are present, so no write claims them again."""
    hold(table, ["warm-up"], f"{socket.gethostname()}~{dead_pid()}~~dead")
    assert len(claims(table)) == 1
    writes._claims_made.clear()  # as in a new process
    assert writes.insert_missing(table, "t", rows(["z"])) == 1
    assert claims(table) == []


def test_the_key_set_sees_rows_other_writers_added_deleted_or_rewrote(table):
    assert writes.insert_missing(table, "t", rows(["a", "b"])) == 2
    lance.write_dataset(rows(["c"]), str(table), mode="append")  # another writer's append
    assert writes.insert_missing(table, "t", rows(["c", "d"])) == 1
    lance.dataset(str(table)).delete("k = 'a'")  # another writer's delete
    assert writes.insert_missing(table, "t", rows(["a", "b"])) == 1
    lance.dataset(str(table)).optimize.compact_files()  # fragments rewritten
    assert writes.insert_missing(table, "t", rows(["a", "b", "c", "d", "e"])) == 1
    shutil.rmtree(table)  # the table made again at the same path
    writes.create_table(table.parent, "t", SCHEMA)
    assert writes.insert_missing(table, "t", rows(["a", "b"])) == 2
    assert sorted(lance.dataset(str(table)).to_table().column("k").to_pylist()) == ["a", "b"]


def test_keys_of_any_length_are_told_apart(table):
    keys = ["a", "a" * 40, "ab", "b", "é", "a" * 39 + "b"]
    assert writes.insert_missing(table, "t", rows(keys[:3])) == 3
    assert writes.insert_missing(table, "t", rows(keys)) == 3
    assert writes.insert_missing(table, "t", rows(keys + ["a" * 41])) == 1
    assert lance.dataset(str(table)).count_rows() == 7


def test_the_claims_table_is_cleaned_of_old_versions_and_their_files(table, monkeypatch):
    monkeypatch.setattr(writes, "CLAIMS_KEPT", timedelta(0))
    for n in range(writes.CLAIMS_CLEANUP_EVERY):
        writes.insert_missing(table, "t", rows([f"k{n}"]))
    claims_table = writes.claims_path(table)
    assert len(lance.dataset(str(claims_table)).versions()) == 1
    assert not list((claims_table / "data").iterdir())  # every claim's data file went with its versions
    assert lance.dataset(str(table)).count_rows() == writes.CLAIMS_CLEANUP_EVERY


@pytest.mark.parametrize("name", ["../..", "/tmp", "../outside", ".claims/emb__x"])
def test_drop_table_removes_nothing_outside_the_store_whatever_the_name(tmp_path, name):
    """drop_table removes a table's folder and its claims table: a name that is a path is refused, and
    nothing beside the store (or its claims folder) is touched."""
    import embedstore
    from embedstore.core.errors import EmbedstoreError

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    store = embedstore.init(tmp_path / "store")
    claims = tmp_path / "store" / ".claims"
    claims.mkdir(exist_ok=True)
    (claims / "keep.txt").write_text("mine")
    with pytest.raises(EmbedstoreError):
        store.catalog.drop_table(name)
    assert (outside / "keep.txt").read_text() == "mine" and (claims / "keep.txt").read_text() == "mine"
    assert (tmp_path / "store" / "tiles.lance").is_dir()
