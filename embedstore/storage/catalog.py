"""The store directory: create or open it, its tables, reading them at any version, and keyed writes.

A store is a directory holding `embedstore.json` (the format marker) and one Lance dataset per table,
`<name>.lance`: the layout of a LanceDB database, so `lancedb.connect(root)` opens the same tables.
The directory may be a local path or an object-store URI (`s3://bucket/prefix`, see
`embedstore.core.location`): `root` is then an `ObjectPath`, which reads and writes like a `Path`.
The catalog is the low half of the store; the verbs (ingest, embed, check, ...) take a catalog, and
`embedstore.Store` holds one (`store.catalog`) and adds the verbs. A function documented to take "a
Store or a Catalog" normalises its argument with `catalog_of`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import lance
import pyarrow as pa

from ..core.errors import EmbedstoreError, NotAStoreError, ReadOnlyStoreError, TableDamagedError, first_line
from ..core.location import ObjectPath, refusals_explained, remove_tree, require_writable, store_location
from ..core.reports import JsonReport
from ..core.schema import CORE_SCHEMAS, EMBEDDING_PREFIX, MARKER_FILE, STORE_FORMAT_VERSION, TILES
from ..core.validation import FileName, check_value
from . import keyed_writes as writes
from . import versions as _versions
from .saved import bound_versions

TABLE_NAME = FileName(max_length=200)  # `<name>.lance` is a folder in the store: a name, never a path

Method = TypeVar("Method", bound=Callable[..., Any])


def _writes(method: Method) -> Method:
    """Marks a Catalog method that writes: the store is checked writable first, and a write the system
    refuses all the same (an object store's access denied) reads as one line naming the store."""

    @functools.wraps(method)
    def checked(self: Catalog, *args: Any, **kwargs: Any) -> Any:
        self.require_writable()
        with refusals_explained(self.root):
            return method(self, *args, **kwargs)

    return checked  # type: ignore[return-value]


class Catalog:
    """A store's directory and tables. Create one with `Catalog.create`, open one with `Catalog.open`."""

    def __init__(self, root: Path | ObjectPath) -> None:
        self.root = root
        self._found_writable = False

    @property
    def is_local(self) -> bool:
        """True for a store in a local directory, False for one on object storage."""
        return isinstance(self.root, Path)

    def require_writable(self) -> None:
        """ReadOnlyStoreError (one line: the path and the fix) when this process may not write the store.
        Every writing verb calls it before any work, and every write below calls it too."""
        if not self._found_writable:
            require_writable(self.root)
            self._found_writable = True

    # -- creating and opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, exist_ok: bool = False) -> Self:
        """Create a new store at `path` (a new or empty directory); with exist_ok, open an existing one.

        The store is built beside `path` and renamed into place, so two processes creating it at once
        end with one store (the other process opens it when `exist_ok`).
        """
        root = store_location(path)
        if isinstance(root, ObjectPath):
            return cls._create_in_object_store(root, exist_ok)
        if (root / MARKER_FILE).exists():
            if exist_ok:
                return cls.open(root)
            raise EmbedstoreError(f"{root} is already a store; open it, or choose another path")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            if exist_ok and (root / MARKER_FILE).exists():  # another process created it just now
                return cls.open(root)
            raise EmbedstoreError(
                f"{root} exists and is not an empty directory; choose a new path for the store"
            )
        _require_creatable(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = root.parent / f".{root.name}.creating-{uuid.uuid4().hex[:12]}"
        try:
            staging.mkdir()
            for name, schema in CORE_SCHEMAS.items():
                writes.create_table(staging, name, schema)
            (staging / MARKER_FILE).write_text(_new_marker())
            os.rename(staging, root)  # replaces an empty directory; fails if another process won
        except OSError:
            if not (root / MARKER_FILE).exists():
                raise
            if not exist_ok:
                raise EmbedstoreError(f"{root} is already a store; open it, or choose another path") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cls.open(root)

    @classmethod
    def _create_in_object_store(cls, root: ObjectPath, exist_ok: bool) -> Self:
        """Create the tables in place, then the marker: the marker's one write makes it a store."""
        root.check_reachable()
        if (root / MARKER_FILE).exists():
            if exist_ok:
                return cls.open(root)
            raise EmbedstoreError(f"{root} is already a store; open it, or choose another path")
        if any(not child.name.endswith(".lance") for child in root.iterdir()):
            raise EmbedstoreError(f"{root} holds other objects; choose a new prefix for the store")
        with refusals_explained(root):
            for name, schema in CORE_SCHEMAS.items():
                writes.create_table(root, name, schema)
            (root / MARKER_FILE).write_text(_new_marker())
        return cls.open(root)

    @classmethod
    def open(cls, path: str | Path | ObjectPath) -> Self:
        """Open an existing store; NotAStoreError when `path` holds none."""
        root = store_location(path)
        if isinstance(root, ObjectPath):
            root.check_reachable()
        marker = read_marker(root, path)
        version = marker.get("format_version")
        if version == 1:
            raise NotAStoreError(
                f"{root} has store format 1 (embedstore 0.1); upgrade it once: `embedstore upgrade {path}`"
            )
        if version != STORE_FORMAT_VERSION:
            raise NotAStoreError(
                f"{root} has store format {version}, this embedstore reads format {STORE_FORMAT_VERSION}; "
                "upgrade embedstore"
            )
        return cls(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # -- tables -----------------------------------------------------------------------------------------

    def table_path(self, name: str) -> Path | ObjectPath:
        """<store>/<name>.lance, for a table name only (never a path out of the store)."""
        return self.root / f"{check_value('--table', name, TABLE_NAME)}.lance"

    def table_names(self) -> list[str]:
        """All tables in the store, core tables first (a `.lance` folder whose name no table can have,
        e.g. `my copy.lance` put there by hand, is not one of them)."""
        names = {
            p.name[: -len(".lance")]
            for p in self.root.iterdir()
            if p.name.endswith(".lance") and TABLE_NAME.accepts(p.name[: -len(".lance")]) and p.is_dir()
        }
        core = [name for name in CORE_SCHEMAS if name in names]
        return core + sorted(names - set(core))

    def embedding_table_names(self) -> list[str]:
        return [name for name in self.table_names() if name.startswith(EMBEDDING_PREFIX)]

    def has_table(self, name: str) -> bool:
        return self.table_path(name).is_dir()

    def dataset(self, name: str, version: int | str | None = None) -> lance.LanceDataset:
        """A table's Lance dataset, at its newest version or at an older `version` (number or tag)."""
        if not self.has_table(name):
            raise EmbedstoreError(
                f"no table {name!r} in {self.root}; tables: {', '.join(self.table_names())}"
            )
        dataset = open_table(self.table_path(name), name, self.root)
        if version is None:
            return dataset
        return open_table(self.table_path(name), name, self.root, _versions.resolve(dataset, name, version))

    def read(
        self,
        name: str,
        version: int | str | None = None,
        columns: list[str] | None = None,
        filter: str | None = None,
    ) -> pa.Table:
        """A whole table (or some columns, or the rows passing a SQL filter) as Arrow."""
        return self.dataset(name, version).to_table(columns=columns, filter=filter)

    def count(self, name: str) -> int:
        return self.dataset(name).count_rows()

    def tile_ids(self) -> set[str]:
        """Ids of every tile in the store."""
        return set(self.read(TILES, columns=["tile_id"]).column("tile_id").to_pylist())

    @_writes
    def create_table(self, name: str, schema: pa.Schema) -> lance.LanceDataset:
        """Create a table (or open it, when another writer created it first)."""
        check_value("--table", name, TABLE_NAME)
        return writes.create_table(self.root, name, schema)

    def remove_if_empty(self) -> bool:
        """Delete the whole store when no table holds a row (a store made for a failed first ingest)."""
        if any(self.count(name) for name in self.table_names()):
            return False
        remove_tree(self.root)
        return True

    @_writes
    def drop_table(self, name: str) -> None:
        """Remove a table with all its versions (and its claims table, see keyed_writes)."""
        self.dataset(name)  # EmbedstoreError naming the tables when there is none
        remove_tree(self.table_path(name))
        remove_tree(writes.claims_path(self.table_path(name)))

    # -- keyed writes (see embedstore.storage.keyed_writes)
    # -------------------------------------------------------------

    @_writes
    def insert_missing(self, name: str, rows: pa.Table) -> int:
        """Insert rows whose key the table lacks; returns how many were inserted."""
        return writes.insert_missing(self.table_path(name), name, rows)

    @_writes
    def upsert(self, name: str, rows: pa.Table) -> tuple[int, int]:
        """Insert new keys, replace existing ones; returns (inserted, updated)."""
        return writes.upsert(self.table_path(name), name, rows)

    @_writes
    def delete(self, name: str, predicate: str) -> int:
        """Delete rows matching a SQL predicate in one new version; returns how many."""
        return writes.delete_where(self.table_path(name), name, predicate)

    # -- versions -----------------------------------------------------------------------------------------

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Versions of one table, oldest first: version, timestamp, rows, tags."""
        return _versions.list_versions(self.dataset(name))

    @_writes
    def restore(self, name: str, version: int | str) -> int:
        """Make an older version (number or tag) of a table the newest; returns the new version number."""
        return _versions.restore(self.dataset(name), name, version)

    @_writes
    def tag(self, name: str, tag: str, version: int | None = None) -> int:
        """Name a version of a table (default: the newest) so compaction keeps it; returns the version."""
        return _versions.tag(self.dataset(name), name, tag, version)

    @_writes
    def compact(self, older_than: timedelta | str = _versions.DEFAULT_RETENTION) -> _versions.CompactReport:
        """Remove every table's untagged versions older than `older_than` (a timedelta, or a duration
        like "7d", "12h", "0s"; never a version a saved index or head is bound to) and merge its fragments
        where that frees space (see `embedstore.storage.versions.compact`); the report gives versions
        and bytes on disk before and after."""
        if isinstance(older_than, str):
            older_than = _versions.parse_duration(older_than)
        report = _versions.CompactReport(_versions.duration_text(older_than))
        bound = bound_versions(self)
        for name in self.table_names():
            report.tables[name] = _versions.compact(
                self.dataset(name), self.table_path(name), older_than, bound.get(name, set())
            )
        return report

    @_writes
    def upkeep(
        self, names: list[str], limit: int = _versions.FRAGMENT_LIMIT, retention: timedelta | None = None
    ) -> list[_versions.TableUpkeep]:
        """The automatic compaction at the end of a run, for the tables it wrote: merge fragments when
        more than `limit` are small, prune versions older than `retention` (default: the store's
        `version_retention`, at least MIN_RETENTION; see `embedstore.storage.versions.upkeep`). Never
        raises for a lost race: it says so in a note."""
        if retention is None:
            retention = max(self.settings().retention, _versions.MIN_RETENTION)
        bound = bound_versions(self)
        return [
            _versions.upkeep(self.dataset(name), name, retention, bound.get(name, set()), limit)
            for name in names
            if self.has_table(name)
        ]

    # -- settings -----------------------------------------------------------------------------------------

    def settings(self) -> StoreSettings:
        """The store's settings, kept in `embedstore.json` (defaults where it has none)."""
        found = read_marker(self.root, self.root).get("settings") or {}
        retention = found.get("version_retention", _versions.duration_text(_versions.DEFAULT_RETENTION))
        return StoreSettings(str(retention))

    @_writes
    def configure(self, version_retention: timedelta | str | None = None) -> StoreSettings:
        """Change the store's settings (None leaves one as it is); returns them all. `version_retention`:
        how long the automatic compaction at the end of `embed` and `ingest` keeps untagged versions
        (a timedelta, or a duration like "7d", "12h"; at least 1h, see MIN_RETENTION)."""
        if version_retention is not None:
            if isinstance(version_retention, str):
                version_retention = _versions.parse_duration(version_retention, "--version-retention")
            if version_retention > _versions.MAX_AGE:
                raise EmbedstoreError(f"--version-retention is longer than {_versions.MAX_AGE.days}d")
            if version_retention < _versions.MIN_RETENTION:
                least = _versions.duration_text(_versions.MIN_RETENTION)
                raise EmbedstoreError(
                    f"--version-retention {_versions.duration_text(version_retention)} is shorter than "
                    f"{least}: other processes may still read versions that young (`embedstore compact "
                    "--older-than 0s` prunes them when nothing else uses the store)"
                )
            marker = read_marker(self.root, self.root)
            marker["settings"] = {
                **(marker.get("settings") or {}),
                "version_retention": _versions.duration_text(version_retention),
            }
            write_marker(self.root, marker)
        return self.settings()


@dataclass
class StoreSettings(JsonReport):
    """A store's settings (`embedstore config STORE`)."""

    version_retention: str  # a duration: untagged versions older than this are pruned after each run

    @property
    def retention(self) -> timedelta:
        return _versions.parse_duration(self.version_retention, "version_retention")

    def summary(self) -> str:
        return (
            f"version_retention  {self.version_retention}  (untagged table versions older than this are "
            "pruned after each embed and ingest run; tagged ones and those saved indexes and heads are "
            "bound to are kept)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HasCatalog(Protocol):
    """What holds a catalog: an `embedstore.Store`, named here without importing it (it sits above)."""

    @property
    def catalog(self) -> Catalog: ...


def catalog_of(store: Catalog | HasCatalog) -> Catalog:
    """The catalog of `store`: a Store's `.catalog`, or the Catalog itself. Entry points documented to
    take a store (heads.train, EmbeddingQuery.of, Searcher, ...) accept either through this."""
    return store if isinstance(store, Catalog) else store.catalog


class TableDataset(lance.LanceDataset):
    """A Lance dataset that names its table when its files do not read: the one door every reader of a
    store's tables goes through (`Catalog.dataset`), so a damaged table gives one line, not a traceback."""

    _table: str = ""
    _store: str = ""

    def to_table(self, *args: Any, **kwargs: Any) -> pa.Table:
        with self._reading():
            return super().to_table(*args, **kwargs)

    def to_batches(self, *args: Any, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        with self._reading():
            batches = super().to_batches(*args, **kwargs)
        return self._guarded(batches)

    def count_rows(self, *args: Any, **kwargs: Any) -> int:
        with self._reading():
            return super().count_rows(*args, **kwargs)

    def _guarded(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with self._reading():
            yield from batches

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Lance's errors of files that do not read become one TableDamagedError naming the table;
        others (a bad filter or column, which the caller explains) pass unchanged."""
        try:
            yield
        except (OSError, pa.ArrowInvalid) as error:
            if isinstance(error, pa.ArrowInvalid) and not str(error).startswith("External error"):
                raise
            problem = f"its files do not read ({first_line(error)})"
            raise TableDamagedError(self._table, problem, self._store) from error


def open_table(
    path: Path | ObjectPath, name: str, store: Path | ObjectPath, version: int | None = None
) -> TableDataset:
    """Open one table at its newest version (or `version`); TableDamagedError (one line) when its
    manifests are gone."""
    try:
        dataset = TableDataset(str(path), version=version)
    except (OSError, ValueError) as error:
        raise TableDamagedError(name, f"it does not open ({first_line(error)})", str(store)) from error
    dataset._table, dataset._store = name, str(store)
    return dataset


def _require_creatable(root: Path) -> None:
    """ReadOnlyStoreError when this process may not create `root` (its nearest existing folder is
    read-only for it), before anything is made."""
    folder = root.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ReadOnlyStoreError(
            f"cannot create a store at {root}: {folder} is read-only for this user; "
            "make it writable (chmod/chown) or choose another path"
        )


def _new_marker() -> str:
    marker = {
        "format": "embedstore",
        "format_version": STORE_FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return json.dumps(marker, indent=2) + "\n"


def write_marker(root: Path | ObjectPath, marker: dict[str, Any]) -> None:
    """Replace the store's marker in one step: a rename here, one PUT on object storage."""
    text = json.dumps(marker, indent=2) + "\n"
    if isinstance(root, ObjectPath):
        (root / MARKER_FILE).write_text(text)
        return
    partial = root / f"{MARKER_FILE}.{uuid.uuid4().hex[:8]}.part"
    partial.write_text(text)
    partial.replace(root / MARKER_FILE)


def read_marker(root: Path | ObjectPath, shown: str | os.PathLike | ObjectPath) -> dict[str, Any]:
    """The store's format marker; NotAStoreError when there is none or it is damaged."""
    marker_path = root / MARKER_FILE
    if not marker_path.exists():
        raise NotAStoreError(f"{root} is not an embedstore store; create one with `embedstore init {shown}`")
    try:
        return json.loads(marker_path.read_text())
    except json.JSONDecodeError:
        raise NotAStoreError(
            f"{marker_path} is damaged (not JSON); restore it or re-create the store"
        ) from None
