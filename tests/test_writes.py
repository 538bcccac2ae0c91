"""The keyed write path on its own: insert what is missing, upsert, delete, tables made once, retries."""

from __future__ import annotations

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
