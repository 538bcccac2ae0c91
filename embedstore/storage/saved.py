"""What a store saves beside its tables, read as plain JSON records: indexes and heads.

    <store>/indexes/<table>/<name>/manifest.json    an index (embedstore.search.manifest.IndexManifest)
    <store>/heads/<name>/card.json                  a head (heads.card.HeadCard)

`info` lists them without importing FAISS or torch: only the JSON files are read, each checked for the
fields a listing needs; one that cannot be read, or lacks them, comes back with `problem` set instead of
raising. The folder and file names are defined here, the lowest layer that knows the store's folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.location import StorePath
from ..core.schema import LABELS

INDEX_DIR = "indexes"
INDEX_MANIFEST = "manifest.json"
HEADS_DIR = "heads"
HEAD_CARD = "card.json"

# Fields a listing reads, with their JSON types.
INDEX_FIELDS = {
    "name": str,
    "backend": str,
    "kind": str,
    "metric": str,
    "center": bool,
    "table": str,
    "table_version": int,
    "backbone": str,
    "weights_sha256": str,
    "rows": int,
}
HEAD_FIELDS = {
    "name": str,
    "kind": str,
    "backbone": str,
    "weights_sha256": str,
    "table": str,
    "table_version": int,
    "task": str,
    "validation": dict,
}


class Rooted(Protocol):
    """What holds a store's folder: a Catalog (named here without importing it: the catalog reads the
    versions saved things are bound to, so that compaction keeps them)."""

    @property
    def root(self) -> StorePath: ...


@dataclass
class SavedRecord:
    """One saved index or head: its name (the folder's), where it lives, and its JSON record, or the
    reason it cannot be read (`problem`; `record` is then None)."""

    name: str
    path: str
    record: dict[str, Any] | None
    problem: str | None = None


def index_records(catalog: Rooted) -> list[SavedRecord]:
    """The manifests of the store's indexes (every table's), by table and name."""
    root = catalog.root / INDEX_DIR
    paths: list[StorePath] = sorted(root.glob(f"*/*/{INDEX_MANIFEST}"))
    return [_read(path, INDEX_FIELDS) for path in paths]


def head_records(catalog: Rooted) -> list[SavedRecord]:
    """The cards of the store's heads, by name (folders of heads being saved, '.'-named, left out)."""
    paths: list[StorePath] = sorted((catalog.root / HEADS_DIR).glob(f"*/{HEAD_CARD}"))
    return [_read(path, HEAD_FIELDS) for path in paths if not path.parent.name.startswith(".")]


def _read(path: Any, fields: dict[str, type]) -> SavedRecord:
    name = path.parent.name
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # missing or unreadable; not UTF-8 or not JSON
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return SavedRecord(name, str(path), None, f"{path.name} cannot be read ({first})")
    if not isinstance(record, dict):
        return SavedRecord(name, str(path), None, f"{path.name} is not a JSON object")
    wrong = [
        key
        for key, kind in fields.items()
        if not isinstance(record.get(key), kind) or (kind is int and isinstance(record.get(key), bool))
    ]
    if wrong:
        return SavedRecord(name, str(path), None, f"{path.name} lacks valid {', '.join(wrong)}")
    return SavedRecord(name, str(path), record)


def bound_versions(catalog: Rooted) -> dict[str, set[int]]:
    """Per table, the versions the store's readable indexes and heads are bound to (a head also to
    the labels table's version it trained at): pruning keeps them, so that `info` can still say how
    far a table has moved on since (rows added) and an index can still be re-read at its version."""
    bound: dict[str, set[int]] = {}
    for saved in [*index_records(catalog), *head_records(catalog)]:
        if saved.record is None:
            continue
        bound.setdefault(saved.record["table"], set()).add(saved.record["table_version"])
        labels = saved.record.get("labels_version")
        if isinstance(labels, int) and not isinstance(labels, bool):
            bound.setdefault(LABELS, set()).add(labels)
    return bound
