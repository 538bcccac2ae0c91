"""Telling a damaged table from a healthy one, and which of its versions still reads.

A table is damaged when it does not open (every manifest is gone), when its newest version's manifest is
missing (Lance then opens the version before it, silently), or when a data file it names does not read
(missing, cut short, corrupt). `inspect_table(..., scan=False)` looks only at what is cheap (the
manifests and the recorded file sizes), for `info`; `scan=True` also reads every column of every
fragment, for `check`, and finds the newest version whose files all read: the one to restore.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lance
import pyarrow as pa

from ..core.errors import TableDamagedError, first_line
from .catalog import Catalog

HINT_FILE = "_versions/latest_version_hint.json"  # Lance writes it after each commit: the newest version
SCAN_BATCH = 1024  # rows per batch when reading every column of a fragment


@dataclass(frozen=True)
class TableDamage:
    """What is wrong with one table, and the newest version that still opens and reads (None: none)."""

    table: str
    problem: str
    restore_to: int | None = None


def inspect_table(catalog: Catalog, name: str, scan: bool) -> TableDamage | None:
    """The table's damage, or None when it opens, has its newest manifest and (with `scan`) reads."""
    try:
        dataset = catalog.dataset(name)
    except TableDamagedError as error:
        if not any(catalog.table_path(name).glob("_versions/*.manifest")):
            return TableDamage(name, "no version of it is left: its _versions folder holds no manifest")
        return TableDamage(name, error.problem)
    data = catalog.table_path(name) / "data"
    verified: dict[str, str | None] = {}
    opened = int(dataset.version)
    missing = missing_newest_version(catalog, name, opened)
    if missing is not None:
        problem = (
            f"its newest version {missing} is missing (the manifest file of that version is gone), so it "
            f"opens at version {opened} without what version {missing} wrote"
        )
        return TableDamage(name, problem, _newest_readable(dataset, data, scan, verified, upto=opened))
    unreadable = _version_problem(dataset, data, scan, verified)
    if unreadable is None:
        return None
    restore_to = _newest_readable(dataset, data, True, verified, upto=opened - 1) if scan else None
    return TableDamage(name, unreadable, restore_to)


def missing_newest_version(catalog: Catalog, name: str, opened: int) -> int | None:
    """The version Lance recorded as committed last, when no manifest of it (or later) is left.

    A writer may have committed since the table was opened at `opened` (Lance writes the manifest, then
    the hint): so a hint beyond `opened` is checked against the table opened again after reading it."""
    try:
        hinted = int(json.loads((catalog.table_path(name) / HINT_FILE).read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no hint (older Lance, or not written): nothing to compare with
    if hinted <= opened:
        return None
    return hinted if hinted > int(catalog.dataset(name).version) else None


def _newest_readable(
    dataset: lance.LanceDataset, data: object, scan: bool, verified: dict[str, str | None], upto: int
) -> int | None:
    """The newest version up to `upto` whose fragments all read; None when none does."""
    numbers = sorted((int(v["version"]) for v in dataset.versions()), reverse=True)
    for number in (n for n in numbers if n <= upto):
        try:
            old = dataset.checkout_version(number)
        except (OSError, ValueError):
            continue
        if _version_problem(old, data, scan, verified) is None:
            return number
    return None


def _version_problem(
    dataset: lance.LanceDataset, data: object, scan: bool, verified: dict[str, str | None]
) -> str | None:
    """Why a fragment of this version does not read (a data file missing, of another size than
    recorded, or failing a full scan), or None. `verified` keeps each fragment's answer, so checking
    several versions of one table reads each fragment once."""
    for fragment in dataset.get_fragments():
        files = fragment.metadata.files
        key = "|".join(f.path for f in files) + f"|{fragment.metadata.deletion_file}"
        if key not in verified:
            verified[key] = _file_sizes_problem(data, files) or (_scan_problem(fragment) if scan else None)
        if verified[key]:
            return f"fragment {fragment.fragment_id} does not read: {verified[key]}"
    return None


def _file_sizes_problem(data: object, files: list) -> str | None:
    """A data file that is missing or whose size differs from what its manifest records (checked in
    local stores; on object stores the scan finds these)."""
    if not isinstance(data, Path):
        return None
    for file in files:
        path = data / file.path
        if not path.is_file():
            return f"data file {file.path} is missing"
        recorded = getattr(file, "file_size_bytes", None)
        size = path.stat().st_size
        if recorded and size != recorded:
            return f"data file {file.path} holds {size} bytes, its manifest records {recorded}"
    return None


def _scan_problem(fragment: lance.LanceFragment) -> str | None:
    """Read every column of every row of a fragment, in small batches; the first error, if any."""
    try:
        for _ in fragment.to_batches(batch_size=SCAN_BATCH):
            pass
    except (OSError, pa.ArrowInvalid) as error:
        return first_line(error)
    return None
