"""Table versions: list, read old ones, restore, tag, and compaction that keeps tagged versions."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import lance

from ..core.errors import EmbedstoreError
from ..core.location import ObjectPath, human_bytes, tree_size
from ..core.reports import JsonReport
from ..core.validation import FileName, check_value

TAG_NAME = FileName(tag=True)  # Lance keeps a tag as a file; all-digit names would read as version numbers
MAX_AGE = timedelta(days=36500)  # --older-than beyond this is refused: no version is that old


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


def parse_duration(text: str) -> timedelta:
    """'7d', '12h', '30m', '0s' or a combination like '1d12h'; at most 100 years."""
    parts = re.fullmatch(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or parts is None:
        raise EmbedstoreError(f"--older-than {text!r} is not a duration; use e.g. 7d, 12h, 30m or 0s")
    amounts = dict(zip(("weeks", "days", "hours", "minutes", "seconds"), parts.groups(), strict=True))
    try:
        duration = timedelta(**{unit: int(value) for unit, value in amounts.items() if value})
    except OverflowError:
        duration = MAX_AGE + MAX_AGE
    if duration > MAX_AGE:
        raise EmbedstoreError(
            f"--older-than {text!r} is longer than {MAX_AGE.days}d (100 years); no version is that old"
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


def compact(dataset: lance.LanceDataset, folder: Path | ObjectPath, older_than: timedelta) -> TableCompaction:
    """Remove untagged versions older than `older_than` (never the newest, never a tagged one), then
    merge the fragments, but only when that frees space: rewriting the rows into new files frees the old
    files only if no version that must be kept still reads them. A version younger than `older_than`, or
    a tagged one, keeps them, so compacting then would only add files; it is skipped and said why."""
    before, bytes_before = len(dataset.versions()), tree_size(folder)
    _cleanup(dataset, older_than)
    dataset = lance.dataset(dataset.uri)
    blocking = _versions_kept_after_compaction(dataset, older_than)
    compacted = not blocking and _needs_compaction(dataset)
    if compacted:
        dataset.optimize.compact_files()
        _cleanup(lance.dataset(dataset.uri), older_than)
    note = ""
    if blocking and _needs_compaction(dataset):
        note = _blocked_note(blocking)
    return TableCompaction(
        before, len(lance.dataset(dataset.uri).versions()), bytes_before, tree_size(folder), compacted, note
    )


def _cleanup(dataset: lance.LanceDataset, older_than: timedelta) -> None:
    # Lance reads a zero timedelta as "not given"; one microsecond is "everything but the newest".
    age = max(older_than, timedelta(microseconds=1))
    dataset.cleanup_old_versions(older_than=age, error_if_tagged_old_versions=False)


def _versions_kept_after_compaction(dataset: lance.LanceDataset, older_than: timedelta) -> str:
    """Which versions a cleanup after compacting now would keep (besides the new one), in words; ''
    when none, so that compacting frees the files the newest version reads now."""
    tagged = set(_tags_by_version(dataset))
    cutoff = datetime.now() - older_than
    young = [
        v
        for v in dataset.versions()
        if cast(datetime, v["timestamp"]) > cutoff and int(v["version"]) not in tagged
    ]
    reasons = []
    if young:
        reasons.append(f"{len(young)} version(s) younger than {duration_text(older_than)}")
    if tagged:
        reasons.append(f"{len(tagged)} tagged version(s)")
    return " and ".join(reasons)


def _blocked_note(blocking: str) -> str:
    note = f"fragments not merged: {blocking} would keep the current files, so merging would only add files"
    if "tagged" not in blocking:
        note += " (--older-than 0s merges now, dropping every untagged older version)"
    return note


def _needs_compaction(dataset: lance.LanceDataset) -> bool:
    """More than one fragment, or deleted rows to drop."""
    fragments = dataset.get_fragments()
    return len(fragments) > 1 or any(f.metadata.deletion_file is not None for f in fragments)


def duration_text(age: timedelta) -> str:
    """A duration as `parse_duration` reads it: 7d, 1d12h, 30m, 0s."""
    hours, rest = divmod(age.seconds, 3600)
    parts = zip((age.days, hours, rest // 60, rest % 60), "dhms", strict=True)
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount) or "0s"
