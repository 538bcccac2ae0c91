"""Table versions: list, read old ones, restore, tag, and compaction that keeps tagged versions."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import lance

from .errors import EmbedstoreError
from .validation import FileName, check_value

TAG_NAME = FileName(tag=True)  # Lance keeps a tag as a file; all-digit names would read as version numbers


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
            "timestamp": v["timestamp"].isoformat(timespec="seconds"),
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
    """'7d', '12h', '30m', '0s' or a combination like '1d12h'."""
    parts = re.fullmatch(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not text.strip() or parts is None:
        raise EmbedstoreError(f"--older-than {text!r} is not a duration; use e.g. 7d, 12h, 30m or 0s")
    amounts = dict(zip(("weeks", "days", "hours", "minutes", "seconds"), parts.groups(), strict=True))
    return timedelta(**{unit: int(value) for unit, value in amounts.items() if value})


def compact(dataset: lance.LanceDataset, older_than: timedelta) -> dict[str, int]:
    """Merge small fragments, then delete untagged versions older than `older_than` (tagged ones stay)."""
    before = len(dataset.versions())
    dataset.optimize.compact_files()
    stats = dataset.cleanup_old_versions(older_than=older_than, error_if_tagged_old_versions=False)
    return {
        "versions_before": before,
        "versions_after": len(lance.dataset(dataset.uri).versions()),
        "bytes_removed": int(stats.bytes_removed),
    }
