"""Table versions: list, read old ones, restore, tag, and compaction that keeps tagged versions.

Two compactions share the pruning rule (`prunable`: untagged versions older than the retention, never
the newest, never one a saved index or head is bound to):

- `compact` (`embedstore compact`): prunes, then merges fragments where that frees space, or where the
  table has more than FRAGMENT_LIMIT small ones.
- `upkeep` (the end of every `embed` and `ingest` run, unless told not to): merges fragments once a
  table has more than FRAGMENT_LIMIT small ones, whatever the disk (the old files go when the versions
  that read them pass the store's `version_retention`), then prunes. Lance's compaction commit is a
  rewrite, conflict-checked against other writers' appends and merge_inserts (which it does not
  conflict with), so it runs beside them; one that still fails is retried, then skipped with a note,
  never failing the run whose rows are already committed.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import lance

from ..core.errors import EmbedstoreError, first_line
from ..core.location import ObjectPath, human_bytes, tree_size
from ..core.reports import JsonReport
from ..core.validation import FileName, check_value

TAG_NAME = FileName(tag=True)  # Lance keeps a tag as a file; all-digit names would read as version numbers
MAX_AGE = timedelta(days=36500)  # --older-than beyond this is refused: no version is that old
DEFAULT_RETENTION = timedelta(days=7)  # `embedstore compact`'s --older-than and a store's version_retention
# A store's version_retention is at least this: pruning runs beside other processes, and a process reads
# the version that was newest when it began (a commit's scan, an index build, a head's training); pruning
# it removes files under its feet (measured: a writer racing pruning at 0s failed with "Not found").
MIN_RETENTION = timedelta(hours=1)
# The automatic compaction merges a table's fragments once more than FRAGMENT_LIMIT of them are small
# (under FRAGMENT_ROWS rows, the size Lance's compaction writes). An embed commit is one fragment of at
# least 4,096 rows: 64 of them are 262,144 rows. Measured (benchmarks/store_versions.py, 1M rows of
# 256-d float16 in 4,096-row keyed commits, 2 busy cores): 255 fragments cost 0.33 s per keyed commit,
# the table compacted at this limit (8 fragments) 0.12 s; the compactions took 7.7 s of 52 s of writing.
FRAGMENT_LIMIT = 64
FRAGMENT_ROWS = 1024 * 1024
COMPACTION_TRIES = 3


def _tags_by_version(dataset: lance.LanceDataset) -> dict[int, list[str]]:
    tags: dict[int, list[str]] = {}
    for tag, info in dataset.tags.list().items():
        tags.setdefault(int(info["version"]), []).append(tag)
    return tags


def list_versions(dataset: lance.LanceDataset) -> list[dict[str, Any]]:
    """Versions oldest first, each with its timestamp, row count and tags."""
    tags = _tags_by_version(dataset)
    return [
        {
            "version": int(v["version"]),
            "timestamp": cast(datetime, v["timestamp"]).isoformat(timespec="seconds"),
            "rows": int(v["metadata"].get("total_rows", 0)),
            "tags": sorted(tags.get(int(v["version"]), [])),
        }
        for v in dataset.versions()
    ]


def resolve(dataset: lance.LanceDataset, name: str, version: int | str) -> int:
    """A version number from a number (or a string of digits) or a tag; EmbedstoreError naming what
    exists."""
    if isinstance(version, str) and not version.isdigit():
        tags = dataset.tags.list()
        if version not in tags:
            raise EmbedstoreError(
                f"table {name!r} has no tag {version!r}; tags: {', '.join(sorted(tags)) or 'none'}"
            )
        return int(tags[version]["version"])
    number = int(version)
    known = {int(v["version"]) for v in dataset.versions()}
    if number not in known:
        raise EmbedstoreError(
            f"table {name!r} has no version {number}; versions: {min(known)}..{max(known)} "
            "(see `embedstore versions STORE --table NAME`; compaction removes old untagged versions)"
        )
    return number


def restore(dataset: lance.LanceDataset, name: str, version: int | str) -> int:
    """Write a new version equal to an older one; returns the new version number."""
    old = dataset.checkout_version(resolve(dataset, name, version))
    old.restore()
    return int(lance.dataset(dataset.uri).version)


def tag(dataset: lance.LanceDataset, name: str, tag_name: str, version: int | None) -> int:
    """Tag a version (default: the newest); an existing tag of that name is moved. A tag is a name
    (`TAG_NAME`): not a path, and not all digits, so `restore` reads digits as a version number."""
    check_value("--tag", tag_name, TAG_NAME)
    number = int(dataset.version) if version is None else resolve(dataset, name, version)
    if tag_name in dataset.tags.list():
        dataset.tags.update(tag_name, number)
    else:
        dataset.tags.create(tag_name, number)
    return number


def parse_duration(text: str, option: str = "--older-than") -> timedelta:
    """'7d', '12h', '30m', '0s' or a combination like '1d12h'; at most 100 years. `option` names the
    value in errors."""
    parts = re.fullmatch(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or parts is None:
        raise EmbedstoreError(f"{option} {text!r} is not a duration; use e.g. 7d, 12h, 30m or 0s")
    amounts = dict(zip(("weeks", "days", "hours", "minutes", "seconds"), parts.groups(), strict=True))
    try:
        duration = timedelta(**{unit: int(value) for unit, value in amounts.items() if value})
    except OverflowError:
        duration = MAX_AGE + MAX_AGE
    if duration > MAX_AGE:
        raise EmbedstoreError(
            f"{option} {text!r} is longer than {MAX_AGE.days}d (100 years); no version is that old"
        )
    return duration


@dataclass
class TableCompaction:
    """What compacting one table did: versions and bytes on disk (the table's folder) before and after."""

    versions_before: int
    versions_after: int
    bytes_before: int
    bytes_after: int
    compacted: bool  # whether its fragments were rewritten into fewer files
    note: str = ""  # why it was not compacted, when it was not

    @property
    def bytes_freed(self) -> int:
        return self.bytes_before - self.bytes_after


@dataclass
class CompactReport(JsonReport):
    """Per table, what `compact` did; `summary()` one line per table and a total."""

    older_than: str
    tables: dict[str, TableCompaction] = field(default_factory=dict)

    def summary(self) -> str:
        lines = []
        for name, done in self.tables.items():
            line = (
                f"{name}: {done.versions_before} -> {done.versions_after} version(s), "
                f"{human_bytes(done.bytes_before)} -> {human_bytes(done.bytes_after)} on disk"
            )
            lines.append(line + (f"; {done.note}" if done.note else ""))
        before = sum(t.bytes_before for t in self.tables.values())
        after = sum(t.bytes_after for t in self.tables.values())
        freed = human_bytes(before - after)
        lines.append(f"total: {human_bytes(before)} -> {human_bytes(after)} on disk, {freed} freed")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        tables = {name: {**asdict(t), "bytes_freed": t.bytes_freed} for name, t in self.tables.items()}
        return {"older_than": self.older_than, "tables": tables}


def compact(
    dataset: lance.LanceDataset,
    folder: Path | ObjectPath,
    older_than: timedelta,
    keep: Collection[int] = (),
) -> TableCompaction:
    """Remove untagged versions older than `older_than` (never the newest, never a tagged one, never
    one of `keep`: those saved indexes and heads are bound to), then merge the fragments when that frees
    space: rewriting the rows into new files frees the old files only if no version that must be kept
    still reads them. A version younger than `older_than`, a tagged or a kept one keeps them, so
    compacting then would only add files; it is skipped and said why, unless the table has more than
    FRAGMENT_LIMIT small fragments (then merging is worth the files kept a while)."""
    before, bytes_before = len(dataset.versions()), tree_size(folder)
    _cleanup(dataset, older_than, keep)
    dataset = lance.dataset(dataset.uri)
    blocking = _versions_kept_after_compaction(dataset, older_than, keep)
    many = small_fragments(dataset) > FRAGMENT_LIMIT
    compacted = (not blocking or many) and _needs_compaction(dataset)
    note = ""
    if compacted:
        dataset.optimize.compact_files()
        _cleanup(lance.dataset(dataset.uri), older_than, keep)
        if blocking:
            note = (
                f"fragments merged (more than {FRAGMENT_LIMIT} small ones slow every read and write); "
                f"the old files stay on disk while {blocking} read them"
            )
    elif blocking and _needs_compaction(dataset):
        note = _blocked_note(blocking)
    return TableCompaction(
        before, len(lance.dataset(dataset.uri).versions()), bytes_before, tree_size(folder), compacted, note
    )


def prunable(dataset: lance.LanceDataset, older_than: timedelta, keep: Collection[int] = ()) -> list[int]:
    """The versions pruning removes: older than `older_than`, untagged, not in `keep`, not the newest."""
    versions = dataset.versions()
    if not versions:
        return []
    newest = max(int(v["version"]) for v in versions)
    kept = set(_tags_by_version(dataset)) | set(keep) | {newest}
    cutoff = datetime.now() - older_than
    return [
        int(v["version"])
        for v in versions
        if int(v["version"]) not in kept and cast(datetime, v["timestamp"]) <= cutoff
    ]


def _cleanup(dataset: lance.LanceDataset, older_than: timedelta, keep: Collection[int] = ()) -> int:
    """Remove the `prunable` versions (and the files only they read); returns how many. The list is
    explicit, so a version another writer commits meanwhile is never touched."""
    versions = prunable(dataset, older_than, keep)
    if versions:
        dataset.cleanup_old_versions(versions=versions, error_if_tagged_old_versions=False)
    return len(versions)


def _versions_kept_after_compaction(
    dataset: lance.LanceDataset, older_than: timedelta, keep: Collection[int] = ()
) -> str:
    """Which versions a cleanup after compacting now would keep (besides the new one), in words; ''
    when none, so that compacting frees the files the newest version reads now."""
    tagged = set(_tags_by_version(dataset))
    bound = set(keep) & {int(v["version"]) for v in dataset.versions()}
    cutoff = datetime.now() - older_than
    young = [
        v
        for v in dataset.versions()
        if cast(datetime, v["timestamp"]) > cutoff and int(v["version"]) not in tagged | bound
    ]
    reasons = []
    if young:
        reasons.append(f"{len(young)} version(s) younger than {duration_text(older_than)}")
    if tagged:
        reasons.append(f"{len(tagged)} tagged version(s)")
    if bound - tagged:
        reasons.append(f"{len(bound - tagged)} version(s) a saved index or head is bound to")
    return " and ".join(reasons)


def _blocked_note(blocking: str) -> str:
    note = f"fragments not merged: {blocking} would keep the current files, so merging would only add files"
    if "tagged" not in blocking and "bound" not in blocking:
        note += " (--older-than 0s merges now, dropping every untagged older version)"
    return note


def _needs_compaction(dataset: lance.LanceDataset) -> bool:
    """More than one fragment, or deleted rows to drop."""
    fragments = dataset.get_fragments()
    return len(fragments) > 1 or any(f.metadata.deletion_file is not None for f in fragments)


def small_fragments(dataset: lance.LanceDataset) -> int:
    """Fragments under FRAGMENT_ROWS rows: the ones Lance's compaction would merge."""
    return sum(1 for f in dataset.get_fragments() if f.metadata.physical_rows < FRAGMENT_ROWS)


@dataclass
class TableUpkeep:
    """What the automatic compaction did to one table at the end of a run."""

    table: str
    fragments_before: int
    fragments_after: int
    versions_before: int
    versions_after: int
    versions_pruned: int
    seconds: float
    compacted: bool  # whether its fragments were merged
    note: str = ""  # why something was skipped, when it was

    @property
    def worth_saying(self) -> bool:
        """Whether a run's summary mentions it: something merged, pruned, or skipped."""
        return self.compacted or self.versions_pruned > 0 or bool(self.note)

    def line(self) -> str:
        """One line for a run's summary."""
        merged = (
            f"{self.fragments_before} -> {self.fragments_after} fragments"
            if self.compacted
            else f"{self.fragments_after} fragments"
        )
        text = (
            f"{self.table}: {merged}, {self.versions_pruned} old version(s) pruned "
            f"({self.versions_after} kept), {self.seconds:.1f} s"
        )
        return text + (f"; {self.note}" if self.note else "")


def upkeep(
    dataset: lance.LanceDataset,
    name: str,
    retention: timedelta,
    keep: Collection[int] = (),
    limit: int = FRAGMENT_LIMIT,
) -> TableUpkeep:
    """Merge the table's fragments when more than `limit` are small, then prune the versions older than
    `retention` (see `prunable`). Never raises for what other writers do: a compaction that keeps
    failing is skipped with a note (the next run tries again), and so is a pruning that fails."""
    started = time.perf_counter()
    uri = dataset.uri
    fragments_before, versions_before = len(dataset.get_fragments()), len(dataset.versions())
    compacted, notes = False, []
    if small_fragments(dataset) > limit:
        compacted, problem = _compact_files(uri)
        if problem:
            notes.append(f"fragments not merged ({problem}); the next run tries again")
    pruned = 0
    try:
        pruned = _cleanup(lance.dataset(uri), retention, keep)
    except (OSError, RuntimeError, ValueError) as error:
        notes.append(f"old versions not pruned ({first_line(error)}); the next run tries again")
    after = lance.dataset(uri)
    return TableUpkeep(
        name,
        fragments_before,
        len(after.get_fragments()),
        versions_before,
        len(after.versions()),
        pruned,
        time.perf_counter() - started,
        compacted,
        "; ".join(notes),
    )


def _compact_files(uri: str) -> tuple[bool, str]:
    """Lance's compaction of the newest version, tried COMPACTION_TRIES times; (done, last error)."""
    problem = ""
    for attempt in range(COMPACTION_TRIES):
        try:
            lance.dataset(uri).optimize.compact_files()
            return True, ""
        except (OSError, RuntimeError, ValueError) as error:
            problem = first_line(error)
            time.sleep(random.uniform(0.05, 0.2) * 2**attempt)
    return False, f"{COMPACTION_TRIES} tries failed: {problem}"


def duration_text(age: timedelta) -> str:
    """A duration as `parse_duration` reads it: 7d, 1d12h, 30m, 0s."""
    hours, rest = divmod(age.seconds, 3600)
    parts = zip((age.days, hours, rest // 60, rest % 60), "dhms", strict=True)
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount) or "0s"
