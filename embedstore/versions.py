"""Table versions: list, read old ones, restore, tag, and compaction that keeps tagged versions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import lancedb

from .errors import EmbedstoreError


def _tags_by_version(table: lancedb.table.Table) -> dict[int, list[str]]:
    tags: dict[int, list[str]] = {}
    for tag, info in table.tags.list().items():
        tags.setdefault(int(info["version"]), []).append(tag)
    return tags


def list_versions(table: lancedb.table.Table) -> list[dict[str, Any]]:
    """Versions oldest first, each with its timestamp, row count and tags."""
    tags = _tags_by_version(table)
    return [
        {
            "version": int(v["version"]),
            "timestamp": v["timestamp"].isoformat(timespec="seconds"),
            "rows": int(v["metadata"].get("total_rows", 0)),
            "tags": sorted(tags.get(int(v["version"]), [])),
        }
        for v in table.list_versions()
    ]


def _resolve(table: lancedb.table.Table, name: str, version: int | str) -> int:
    known = {v["version"] for v in table.list_versions()}
    if isinstance(version, str) and not version.isdigit():
        tags = table.tags.list()
        if version not in tags:
            raise EmbedstoreError(
                f"table {name!r} has no tag {version!r}; tags: {', '.join(sorted(tags)) or 'none'}"
            )
        return int(tags[version]["version"])
    number = int(version)
    if number not in known:
        raise EmbedstoreError(
            f"table {name!r} has no version {number}; versions: {min(known)}..{max(known)} "
            "(see `embedstore versions STORE --table NAME`; compaction removes old untagged versions)"
        )
    return number


def checkout(table: lancedb.table.Table, name: str, version: int | str) -> None:
    """Point `table` at an older version, read-only."""
    table.checkout(_resolve(table, name, version))


def restore(table: lancedb.table.Table, name: str, version: int | str) -> int:
    """Write a new version equal to an older one; returns the new version number."""
    table.restore(_resolve(table, name, version))
    return int(table.version)


def tag(table: lancedb.table.Table, name: str, tag_name: str, version: int | None) -> int:
    """Tag a version (default: the newest); an existing tag of that name is moved."""
    number = int(table.version) if version is None else _resolve(table, name, version)
    if tag_name in table.tags.list():
        table.tags.update(tag_name, number)
    else:
        table.tags.create(tag_name, number)
    return number


def compact(table: lancedb.table.Table, older_than: timedelta) -> dict[str, int]:
    """Merge small fragments, then delete untagged versions older than `older_than` (tagged ones stay)."""
    dataset = table.to_lance()
    before = len(dataset.versions())
    dataset.optimize.compact_files()
    stats = dataset.cleanup_old_versions(older_than=older_than, error_if_tagged_old_versions=False)
    table.checkout_latest()
    return {
        "versions_before": before,
        "versions_after": len(table.to_lance().versions()),
        "bytes_removed": int(stats.bytes_removed),
    }
