"""Writes that stay exact under concurrency and crashes: every row goes in by its key, at most once.

Every table declares one key column as its Lance primary key (`embedstore.core.schema`), and rows go in with
`merge_insert(key)`: inserted when the key is new, skipped (or, for `upsert`, replaced) when it is
there. Lance commits are atomic and conflict-checked; when two writers insert the same new key at
once, the later commit conflicts and Lance retries it against the newer version, where the key is no
longer new. Measured with pylance 14 (4-8 processes racing over overlapping keys, tests/test_concurrency.py
does it with real `embedstore` processes): with a declared single-column key, always one row per key;
without the declaration, or with a two-column key, duplicates appeared. Hence the single `row_key`
column of tables whose natural key has two parts. A crash, even kill -9, leaves whole commits only, so
a re-run completes the row set exactly.

Tables are created in a staging directory and renamed into place: creating one Lance dataset from two
processes at once was measured to lose the first writer's rows, while a directory rename is atomic. A
staged table's name records its host and process, so that a process killed while creating one leaves a
leftover that the next table creation on that host removes (and `check` tells from one in progress).
Object stores have no rename; there Lance creates the table in place, and its first manifest is written
with a conditional put, so of two creators one wins and the other opens the winner's table.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
import uuid
from datetime import timedelta
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa

from ..core import hooks
from ..core.errors import EmbedstoreError
from ..core.location import ObjectPath
from ..core.schema import declared_key

STAGING_DIR = ".staging"
CONFLICT_RETRIES = 20  # Lance's own retries of a conflicting commit
OUTER_RETRIES = 8  # ours, when Lance gives up (many writers at once)
_RETRY_TIMEOUT = timedelta(minutes=5)


def create_table(root: Path | ObjectPath, name: str, schema: pa.Schema) -> lance.LanceDataset:
    """The table `name` under `root`, created empty with `schema` unless another writer made it first."""
    if isinstance(root, ObjectPath):
        return _create_in_place(root / f"{name}.lance", name, schema)
    target = root / f"{name}.lance"
    remove_dead_staging(root / STAGING_DIR)
    if not target.exists():
        staging = root / STAGING_DIR / f"{name}~{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex}.lance"
        staging.parent.mkdir(exist_ok=True)
        try:
            lance.write_dataset(schema.empty_table(), str(staging), mode="create")
            hooks.fire("write.before_commit", table=name, rows=0)
            os.rename(staging, target)
        except OSError:
            if not target.exists():  # not the lost race of two creators: a real failure
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        hooks.fire("write.after_commit", table=name, rows=0)
    return lance.dataset(str(target))


def staging_owner_alive(entry: str) -> bool | None:
    """Whether the process that is creating a staged table (`name~host~pid~uuid.lance`) still runs:
    True or False for one of this host, None when that cannot be told (another host, an older name)."""
    parts = entry.removesuffix(".lance").rsplit("~", 3)
    if len(parts) != 4 or parts[1] != socket.gethostname() or not parts[2].isdigit():
        return None
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, run by another user
    return True


def remove_dead_staging(staging: Path) -> list[str]:
    """Remove the half-created tables of processes of this host that died (kill -9) while creating
    them: nothing reads them, and the run that is re-done creates its table anew. Returns their names."""
    if not staging.is_dir():
        return []
    dead = [entry.name for entry in staging.iterdir() if staging_owner_alive(entry.name) is False]
    for name in dead:
        shutil.rmtree(staging / name, ignore_errors=True)
    return dead


def _create_in_place(target: ObjectPath, name: str, schema: pa.Schema) -> lance.LanceDataset:
    if not target.is_dir():
        hooks.fire("write.before_commit", table=name, rows=0)
        try:
            lance.write_dataset(schema.empty_table(), str(target), mode="create")
        except OSError as error:
            if "already exists" not in str(error).lower():
                raise
        hooks.fire("write.after_commit", table=name, rows=0)
    return lance.dataset(str(target))


def table_key(dataset: lance.LanceDataset, name: str) -> str:
    """The table's declared key column; EmbedstoreError for a table written before keys were declared."""
    key = declared_key(dataset.schema)
    if key is None:
        raise EmbedstoreError(
            f"table {name!r} declares no key column (written by embedstore < 0.2); "
            "run `embedstore upgrade STORE` once"
        )
    return key


def unique_by(rows: pa.Table, key: str) -> pa.Table:
    """The first row of each key."""
    values = rows.column(key).to_numpy(zero_copy_only=False)
    _, first = np.unique(values.astype(str), return_index=True)
    return rows if len(first) == rows.num_rows else rows.take(pa.array(np.sort(first)))


def insert_missing(path: Path | ObjectPath, name: str, rows: pa.Table) -> int:
    """Insert the rows whose key the table does not hold yet; returns how many were inserted."""
    return _merge(path, name, rows, update=False)[0]


def upsert(path: Path | ObjectPath, name: str, rows: pa.Table) -> tuple[int, int]:
    """Insert new keys and replace the rows of existing ones; returns (inserted, updated)."""
    return _merge(path, name, rows, update=True)


def delete_where(path: Path | ObjectPath, name: str, predicate: str) -> int:
    """Delete the rows matching a SQL predicate in one commit; returns how many were deleted."""
    hooks.fire("write.before_commit", table=name, rows=0)
    result = _retrying(lambda: lance.dataset(str(path)).delete(predicate, conflict_retries=CONFLICT_RETRIES))
    deleted = int(result["num_deleted_rows"])
    hooks.fire("write.after_commit", table=name, rows=deleted)
    return deleted


def _merge(path: Path | ObjectPath, name: str, rows: pa.Table, update: bool) -> tuple[int, int]:
    if rows.num_rows == 0:
        return 0, 0
    key = table_key(lance.dataset(str(path)), name)
    rows = unique_by(rows, key)
    hooks.fire("write.before_commit", table=name, rows=rows.num_rows)

    def commit() -> dict:
        builder = lance.dataset(str(path)).merge_insert(key)
        if update:
            builder = builder.when_matched_update_all()
        builder = builder.when_not_matched_insert_all()
        return builder.conflict_retries(CONFLICT_RETRIES).retry_timeout(_RETRY_TIMEOUT).execute(rows)

    result = _retrying(commit)
    inserted, updated = int(result["num_inserted_rows"]), int(result["num_updated_rows"])
    hooks.fire("write.after_commit", table=name, rows=inserted + updated)
    return inserted, updated


def _retrying(commit):
    """Run a Lance commit; on a conflict that Lance's own retries did not resolve, back off and redo."""
    for attempt in range(OUTER_RETRIES):
        try:
            return commit()
        except (OSError, RuntimeError, ValueError) as error:
            text = str(error).lower()
            contended = "conflict" in text or "too many concurrent writers" in text
            if not contended or attempt == OUTER_RETRIES - 1:
                raise
            time.sleep(random.uniform(0.05, 0.2) * 2**attempt)
    raise AssertionError("unreachable")
