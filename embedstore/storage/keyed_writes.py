"""Writes that stay exact under concurrency and crashes: every row goes in by its key, at most once.

Every table declares one key column as its Lance primary key (`embedstore.core.schema`). Lance's
`merge_insert(key)` on a declared key is exact under concurrency: when two writers insert the same new
key at once, the later commit conflicts and Lance retries it against the newer version, where the key is
no longer new (measured with pylance 14, 4-8 processes racing over overlapping keys: always one row per
key; without the declaration, or with a two-column key, duplicates appeared; hence the single `row_key`
column of tables whose natural key has two parts). A crash, even kill -9, leaves whole commits only.

But a merge_insert joins the rows with the whole key column: its cost grows with the table (#24).
Measured (pylance 14.0.2, 2 cores, 4,096-row commits, 256-d float16, benchmarks/scale_store.py):
0.04 s a commit at 10^5 rows, 0.14-0.20 s at 10^6, 0.51 s at 4x10^6; a plain append 0.018-0.025 s flat.
Candidates measured:
  (a) a BTREE index on the key: merge_insert with it took 0.05 / 0.17 / 0.8 s at 10^5 / 10^6 / 4x10^6,
      no better than without (4,096 random keys touch nearly every page of the index), a filtered
      `key IN (4,096 keys)` read through it 0.07 / 0.20 / 0.8 s, and each unindexed commit since the
      index adds a scan (20 of them: 0.17 -> 0.21 s at 10^6). Not used.
  (b) check, then append: two Appends committed from the same read version both land (no conflict,
      measured), so two writers that both found a key missing both append it: duplicates.
  (c) claims (used): a merge_insert into a small claims table that holds only the claims in flight
      (4,096 keys: ~0.011 s to claim, ~0.004 s to release, whatever the size of the data table).
So `insert_missing` (the hot path of embed and ingest) does, per call:
  1. drop the keys present in the table, as this process last saw it: a per-process key set (`_KeySet`)
     that reads the table's key column once, then only the fragments appended since (it follows the
     transactions between versions; anything but an append makes it read the column again);
  2. claim the rest in `<store>/.claims/<table>.lance` (merge_insert on its declared key: of two writers
     claiming a key at once, one wins). Keys a running writer holds are waited for (it holds them for
     one commit); keys a dead writer holds are taken over: on this host, its pid and start time are gone;
     of another host, its claim is older than CLAIM_LEASE;
  3. check the claimed keys again against the table's newest version (a writer that held them before
     appended them before releasing them), append the rows still missing (one plain Lance append), and
     release the claims. After a kill -9 before the append, the claims stay, dead, and the re-run takes
     them over; after a kill -9 between append and release the rows are in, and the dead claims are
     removed by the next process's first write to that table.
Measured (benchmarks/scale_store.py, two full runs on a shared 2-core machine at load 5-10): a commit
0.06-0.07 s at 10^5 rows, 0.08 s at 10^6, 0.09-0.14 s at 10^7 (x1.5-1.9; the old path x46-52, 2.3-2.7 s;
a plain append itself went 0.024-0.028 -> 0.045-0.049 s); 25-40 thousand rows/s into 10^7 rows with
1, 2 or 4 writers (old path 0.4-1.8 thousand): short of the 50,000 aimed at, as a write is three
Lance commits (claim, append, release: ~45 ms of ~75 ms at 10^6 rows, profiled). Each process's first
write reads the key column once (1 s at 10^6 rows, 11-17 s at 10^7, ~35 bytes a key held in memory);
the embed run that calls it has read the table's keys to plan already. `upsert` is rare (the sources,
files and labels of an ingest) and keeps its merge_insert, under claims of its keys so that it cannot
insert a key that an `insert_missing` appends at the same time. Object stores work alike: claims are rows of a
Lance table, no rename or lock file is involved.

Tables are created in a staging directory and renamed into place: creating one Lance dataset from two
processes at once was measured to lose the first writer's rows, while a directory rename is atomic. A
staged table's name records its host and process, so that a process killed while creating one leaves a
leftover that the next table creation on that host removes (and `check` tells from one in progress).
Object stores have no rename; there Lance creates the table in place, and its first manifest is written
with a conditional put, so of two creators one wins and the other opens the winner's table.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa

from ..core import hooks
from ..core.errors import EmbedstoreError
from ..core.ids import id_bytes
from ..core.location import ObjectPath, store_location
from ..core.schema import declared_key, key_field, sql_string

STAGING_DIR = ".staging"
CONFLICT_RETRIES = 20  # Lance's own retries of a conflicting commit
OUTER_RETRIES = 8  # ours, when Lance gives up (many writers at once)
_RETRY_TIMEOUT = timedelta(minutes=5)
CLAIMS_DIR = ".claims"
CLAIMS_SCHEMA = pa.schema(
    [
        key_field("key"),
        pa.field("owner", pa.string(), nullable=False),  # host~pid~start~uuid of the claiming call
        pa.field("claimed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
CLAIM_LEASE = timedelta(minutes=10)  # a claim of another host's writer is taken over after this
CLAIMS_CLEANUP_EVERY = 64  # a process's releases between two cleanups of a claims table
CLAIMS_KEPT = timedelta(minutes=1)  # claims-table versions younger than this survive a cleanup
_claims_made: set[str] = set()
_releases: dict[str, int] = {}
_key_sets: dict[str, _KeySet] = {}
_key_sets_lock = threading.Lock()


def create_table(
    root: Path | ObjectPath, name: str, schema: pa.Schema, announce: bool = True
) -> lance.LanceDataset:
    """The table `name` under `root`, created empty with `schema` unless another writer made it first.
    `announce=False` fires no write hook (a claims table: bookkeeping, not one of the store's commits)."""
    fire = hooks.fire if announce else _silent
    if isinstance(root, ObjectPath):
        return _create_in_place(root / f"{name}.lance", name, schema, fire)
    target = root / f"{name}.lance"
    remove_dead_staging(root / STAGING_DIR)
    if not target.exists():
        staging = root / STAGING_DIR / f"{name}~{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex}.lance"
        staging.parent.mkdir(exist_ok=True)
        try:
            lance.write_dataset(schema.empty_table(), str(staging), mode="create")
            fire("write.before_commit", table=name, rows=0)
            os.rename(staging, target)
        except OSError:
            if not target.exists():  # not the lost race of two creators: a real failure
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        fire("write.after_commit", table=name, rows=0)
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


def _silent(point: str, **details: object) -> None:
    """In place of hooks.fire where nothing is announced."""


def _create_in_place(
    target: ObjectPath, name: str, schema: pa.Schema, fire: Callable[..., None]
) -> lance.LanceDataset:
    if not target.is_dir():
        fire("write.before_commit", table=name, rows=0)
        try:
            lance.write_dataset(schema.empty_table(), str(target), mode="create")
        except OSError as error:
            if "already exists" not in str(error).lower():
                raise
        fire("write.after_commit", table=name, rows=0)
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
    """Insert the rows whose key the table does not hold yet; returns how many were inserted.

    Keys already present (as this process last saw the table) are dropped, the rest are claimed, checked
    again against the table's newest version, and the rows still missing are appended in one commit."""
    if rows.num_rows == 0:
        return 0
    path = store_location(path)
    dataset = lance.dataset(str(path))
    key = table_key(dataset, name)
    rows = unique_by(rows, key)
    hooks.fire("write.before_commit", table=name, rows=rows.num_rows)
    rows = rows.filter(pa.array(~_present_keys(path, dataset, key, rows.column(key))))

    def append(claimed: pa.Table) -> tuple[int, int]:
        latest = lance.dataset(str(path))
        missing = claimed.filter(pa.array(~_present_keys(path, latest, key, claimed.column(key))))
        if missing.num_rows:
            _retrying(lambda: lance.write_dataset(missing, str(path), mode="append"))
        return missing.num_rows, 0

    inserted, _ = _under_claims(path, name, key, rows, append)
    hooks.fire("write.after_commit", table=name, rows=inserted)
    return inserted


def upsert(path: Path | ObjectPath, name: str, rows: pa.Table) -> tuple[int, int]:
    """Insert new keys and replace the rows of existing ones; returns (inserted, updated).

    Rare and small (sources, files, labels of an ingest): a `merge_insert` (its cost grows with the
    table), under claims of its keys so that it cannot insert a key that an `insert_missing` appends."""
    if rows.num_rows == 0:
        return 0, 0
    path = store_location(path)
    key = table_key(lance.dataset(str(path)), name)
    rows = unique_by(rows, key)
    hooks.fire("write.before_commit", table=name, rows=rows.num_rows)

    def merge(claimed: pa.Table) -> tuple[int, int]:
        def commit() -> dict:
            builder = lance.dataset(str(path)).merge_insert(key).when_matched_update_all()
            builder = builder.when_not_matched_insert_all()
            return builder.conflict_retries(CONFLICT_RETRIES).retry_timeout(_RETRY_TIMEOUT).execute(claimed)

        result = _retrying(commit)
        return int(result["num_inserted_rows"]), int(result["num_updated_rows"])

    inserted, updated = _under_claims(path, name, key, rows, merge)
    hooks.fire("write.after_commit", table=name, rows=inserted + updated)
    return inserted, updated


def delete_where(path: Path | ObjectPath, name: str, predicate: str) -> int:
    """Delete the rows matching a SQL predicate in one commit; returns how many were deleted."""
    hooks.fire("write.before_commit", table=name, rows=0)
    result = _retrying(lambda: lance.dataset(str(path)).delete(predicate, conflict_retries=CONFLICT_RETRIES))
    deleted = int(result["num_deleted_rows"])
    hooks.fire("write.after_commit", table=name, rows=deleted)
    return deleted


# -- claims ---------------------------------------------------------------------------------------------


def claims_path(path: Path | ObjectPath) -> Path | ObjectPath:
    """The claims table of the table at `path`: `<store>/.claims/<name>.lance`."""
    return path.parent / CLAIMS_DIR / path.name


def _under_claims(
    path: Path | ObjectPath,
    name: str,
    key: str,
    rows: pa.Table,
    write: Callable[[pa.Table], tuple[int, int]],
) -> tuple[int, int]:
    """Run `write` on the rows whose keys this call holds the claims of, until every row has had its turn.
    Keys another running writer holds are waited for (its write takes one commit); keys a dead writer
    holds are taken over. Returns the sums of what `write` returned."""
    totals = [0, 0]
    deadline = time.monotonic() + _RETRY_TIMEOUT.total_seconds()
    pause = 0.01
    while rows.num_rows:
        owner = _new_owner()
        won = _claim(path, rows.column(key), owner)
        if won.any():
            try:
                hooks.fire("write.claimed", table=name, rows=int(won.sum()))
                done = write(rows.filter(pa.array(won)))
                totals[0] += done[0]
                totals[1] += done[1]
            finally:
                _release(path, owner)
            rows = rows.filter(pa.array(~won))
            pause = 0.01
            continue
        if time.monotonic() > deadline:
            raise EmbedstoreError(
                f"table {name!r}: {rows.num_rows} key(s) stayed claimed by other running writers for "
                f"{_RETRY_TIMEOUT}; see {claims_path(path)}"
            )
        time.sleep(random.uniform(pause / 2, pause))  # another writer holds them for its one commit
        pause = min(pause * 2, 0.5)
    return totals[0], totals[1]


def _claims_dataset(path: Path | ObjectPath) -> lance.LanceDataset:
    """The claims table, created on first use; the first use in a process removes dead writers' claims
    (those of rows a killed writer appended but did not release would otherwise stay)."""
    claims = claims_path(path)
    if str(claims) in _claims_made:
        with contextlib.suppress(OSError, ValueError):  # else gone: its store was removed and made again
            return lance.dataset(str(claims))
    if not claims.is_dir():
        if isinstance(claims, Path):
            claims.parent.mkdir(exist_ok=True)
        create_table(claims.parent, claims.name.removesuffix(".lance"), CLAIMS_SCHEMA, announce=False)
    _claims_made.add(str(claims))
    dataset = lance.dataset(str(claims))
    if dataset.count_rows():
        remove_dead_claims(path)
        dataset = lance.dataset(str(claims))
    return dataset


def remove_dead_claims(path: Path | ObjectPath) -> int:
    """Remove the claims of writers that died holding them (see _owner_alive); returns how many."""
    claims = claims_path(store_location(path))
    if not claims.is_dir():
        return 0
    dead = _dead_owners(lance.dataset(str(claims)).to_table().to_pylist(), owner="")
    if not dead:
        return 0
    predicate = _in("owner", dead)
    return int(_retrying(lambda: lance.dataset(str(claims)).delete(predicate))["num_deleted_rows"])


def dead_claims(path: Path | ObjectPath) -> tuple[int, list[str]]:
    """The claims held by writers that died (see _owner_alive) in the claims table of the table at
    `path`: how many, and their owners. Reads only the claims table; writes nothing."""
    claims = claims_path(store_location(path))
    if not claims.is_dir():
        return 0, []
    held = lance.dataset(str(claims)).to_table(columns=["owner", "claimed_at"]).to_pylist()
    dead = _dead_owners(held, owner="")
    return sum(row["owner"] in dead for row in held), dead


def _dead_owners(held: list[dict], owner: str) -> list[str]:
    """The owners of claims `held` (rows of the claims table) that are dead, other than `owner`."""
    since = {row["owner"]: row["claimed_at"] for row in held}
    return sorted(o for o, at in since.items() if o != owner and not _owner_alive(o, at))


def _claim(path: Path | ObjectPath, keys: pa.ChunkedArray | pa.Array, owner: str) -> np.ndarray:
    """Claim `keys` for `owner` in one keyed commit (Lance lets one of two racing claims of a key win);
    claims of dead writers are removed and claimed again. Returns which keys `owner` now holds."""
    wanted = pa.table(
        {"key": keys, "owner": pa.array([owner] * len(keys)), "claimed_at": _now_column(len(keys))},
        schema=CLAIMS_SCHEMA,
    )

    def claim() -> dict:
        builder = _claims_dataset(path).merge_insert("key").when_not_matched_insert_all()
        return builder.conflict_retries(CONFLICT_RETRIES).retry_timeout(_RETRY_TIMEOUT).execute(wanted)

    mine = np.zeros(len(keys), bool)
    for _ in range(3):  # once, and again after removing dead writers' claims (others may race us for them)
        if int(_retrying(claim)["num_inserted_rows"]) == len(keys):
            return np.ones(len(keys), bool)
        held = _claims_dataset(path).to_table().to_pylist()  # the claims in flight: a few commits' keys
        holder = {row["key"]: row["owner"] for row in held}
        mine = np.array([holder.get(k) == owner for k in wanted.column("key").to_pylist()], bool)
        dead = _dead_owners(held, owner)
        if not dead:
            return mine
        predicate = _in("owner", dead)
        _retrying(lambda: _claims_dataset(path).delete(predicate))  # noqa: B023 (called at once)
    return mine


def _release(path: Path | ObjectPath, owner: str) -> None:
    _retrying(lambda: _claims_dataset(path).delete(f"owner = {sql_string(owner)}"))
    releases = _releases[str(path)] = _releases.get(str(path), 0) + 1
    if releases % CLAIMS_CLEANUP_EVERY == 0:
        cleanup_claims(path)


def cleanup_claims(path: Path | ObjectPath) -> None:
    """Remove the claims table's versions older than CLAIMS_KEPT, and the files only they used: every
    claim writes a small data file that its release leaves behind (about 0.25 MB per 4,096 keys).
    Best effort: a failure here loses nothing, the next cleanup does it."""
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        _claims_dataset(path).cleanup_old_versions(older_than=CLAIMS_KEPT)


def _process_start(pid: int) -> str:
    """The start time of a process (clock ticks since boot), '' where /proc cannot tell it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _new_owner() -> str:
    """host~pid~start~uuid: enough to tell, on this host, whether the claiming process still runs."""
    pid = os.getpid()
    return f"{socket.gethostname()}~{pid}~{_process_start(pid)}~{uuid.uuid4().hex[:12]}"


def _owner_alive(owner: str, claimed_at: datetime | None) -> bool:
    """Whether the writer that made a claim may still be writing: on this host, its process (the same
    pid and start time) still runs; of another host, the claim is younger than CLAIM_LEASE."""
    parts = owner.split("~")
    if len(parts) == 4 and parts[0] == socket.gethostname() and parts[1].isdigit():
        pid, start = int(parts[1]), parts[2]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return not start or _process_start(pid) in ("", start)
    if claimed_at is None:
        return False
    return datetime.now(UTC) - claimed_at < CLAIM_LEASE


def _now_column(n: int) -> pa.Array:
    now = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "us")
    return pa.array(np.full(n, now)).cast(pa.timestamp("us", tz="UTC"))


def _in(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(sql_string(v) for v in values)})"


# -- the keys a table holds, as this process last saw them ----------------------------------------------


class _KeySet:
    """The keys of one table, kept up to date by reading only the fragments added since the last look.
    Held as runs, each a sorted array of 64-bit hashes of the keys with the keys in the same order (a
    hash finds a key's place, the key itself decides): a big run and a few small ones of recent keys,
    merged as they grow, so that a look costs O(keys looked up + keys added), never a sort of the
    whole. A commit other than an append (a delete, an upsert, a compaction, a restore) makes it read
    the table again."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version: int | None = None  # of the table, when last looked at
        self.fragments: set[int] = set()
        self.anchor: tuple[int, str | None] | None = None  # a fragment's id and data file: same table?
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (hashes, keys), biggest first

    def refresh(self, dataset: lance.LanceDataset, key: str) -> None:
        """Catch up with `dataset`'s version: read the keys of the fragments appended since the last
        look (the transactions between say they were appends only), else the whole key column."""
        version = dataset.version
        if version == self.version:
            return
        if not self._only_appended(dataset, version):
            self.fragments, self.runs = set(), []
        ids = set(dataset.fragment_ids())
        new = sorted(ids - self.fragments)
        if not self.fragments:
            self.runs = [_run(id_bytes(dataset.to_table(columns=[key]).column(key)))] if ids else []
        elif new:
            fragments = [f for f in map(dataset.get_fragment, new) if f is not None]
            self._add(
                _run(id_bytes(dataset.scanner(columns=[key], fragments=fragments).to_table().column(key)))
            )
        self.version, self.fragments = version, ids
        self.anchor = (max(ids), _data_file(dataset, max(ids))) if ids else None

    def _only_appended(self, dataset: lance.LanceDataset, version: int) -> bool:
        """Whether every commit since the last look only appended fragments to the same table."""
        if self.version is None or version < self.version:
            return False
        if self.anchor is not None and _data_file(dataset, self.anchor[0]) != self.anchor[1]:
            return False  # the table was made again at the same path
        try:
            for between in range(self.version + 1, version + 1):
                transaction = dataset.read_transaction(between)
                if transaction is None or type(transaction.operation).__name__ != "Append":
                    return False
        except (OSError, ValueError):  # a version removed by compaction meanwhile
            return False
        return True

    def contains(self, keys: np.ndarray) -> np.ndarray:
        hashes = _hash(keys)
        order = np.argsort(hashes)  # sorted needles: numpy's searchsorted then runs ~3x faster
        keys, hashes = keys[order], hashes[order]
        found = np.zeros(len(keys), bool)
        for run_hashes, run_keys in self.runs:
            if not len(run_hashes):
                continue
            at = np.searchsorted(run_hashes, hashes)
            while True:  # the run's keys of the same hash, one after another (two at most, in practice)
                inside = at < len(run_hashes)
                same = np.zeros(len(keys), bool)
                same[inside] = run_hashes[at[inside]] == hashes[inside]
                if not same.any():
                    break
                width = max(run_keys.itemsize, keys.itemsize)  # a longer key equals no shorter one
                candidates = run_keys[at[same]].astype(f"S{width}", copy=False)
                found[same] |= candidates == keys[same].astype(f"S{width}", copy=False)
                at = at + 1
        unsorted = np.empty_like(found)
        unsorted[order] = found
        return unsorted

    def _add(self, run: tuple[np.ndarray, np.ndarray]) -> None:
        """Add a run; merge the last two while the newer is at least half the older (a binary counter:
        each key is copied O(log n) times over the life of the set)."""
        self.runs.append(run)
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):
            (newer_hashes, newer), (older_hashes, older) = self.runs.pop(), self.runs.pop()
            width = max(newer.itemsize, older.itemsize)
            at = np.searchsorted(older_hashes, newer_hashes)
            merged_keys = np.insert(older.astype(f"S{width}"), at, newer.astype(f"S{width}"))
            self.runs.append((np.insert(older_hashes, at, newer_hashes), merged_keys))


def _hash(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each bytes key: FNV-1a over its 8-byte words, then splitmix64's finaliser. The
    zero words that pad a numpy "S" array are skipped (keys hold no NUL), so a key hashes alike in
    arrays of any width."""
    width = -(-keys.itemsize // 8) * 8
    padded = np.zeros((len(keys), width), np.uint8)
    padded[:, : keys.itemsize] = keys.view(np.uint8).reshape(len(keys), keys.itemsize)
    hashes = np.full(len(keys), 0xCBF29CE484222325, np.uint64)
    for word in padded.view(np.uint64).T:
        hashes = np.where(word != 0, (hashes ^ word) * np.uint64(0x100000001B3), hashes)
    hashes = (hashes ^ (hashes >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    hashes = (hashes ^ (hashes >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return hashes ^ (hashes >> np.uint64(31))


def _run(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hashes = _hash(keys)
    order = np.argsort(hashes, kind="stable")
    return hashes[order], keys[order]


def _data_file(dataset: lance.LanceDataset, fragment_id: int) -> str | None:
    fragment = dataset.get_fragment(fragment_id)
    files = fragment.metadata.files if fragment is not None else []
    return files[0].path if files else None


def _present_keys(
    path: Path | ObjectPath, dataset: lance.LanceDataset, key: str, keys: pa.ChunkedArray | pa.Array
) -> np.ndarray:
    """Which of `keys` the table holds in `dataset`'s version: O(keys + rows added since this process
    last looked), not O(table) (but the first look of a process at a table reads its whole key column)."""
    with _key_sets_lock:
        key_set = _key_sets.setdefault(f"{path}#{key}", _KeySet())
    with key_set.lock:
        key_set.refresh(dataset, key)
        return key_set.contains(id_bytes(keys))


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
