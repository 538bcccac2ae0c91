"""The store: a directory holding a LanceDB database with the sources, tiles and labels tables."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lancedb
import pyarrow as pa

from . import versions as _versions
from .errors import EmbedstoreError, NotAStoreError
from .schema import CORE_SCHEMAS, EMBEDDING_PREFIX, MARKER_FILE, STORE_FORMAT_VERSION, TILES

if TYPE_CHECKING:
    from .embed import EmbedReport
    from .ingest import IngestOptions, IngestReport


class Store:
    """An embedstore store. Create one with `embedstore.init(path)`, open one with `embedstore.open(path)`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = lancedb.connect(str(root))

    # -- creating and opening -------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | Path, exist_ok: bool = False) -> Store:
        """Create a new store at `path` (a directory); with exist_ok, open it if it is already a store."""
        root = Path(path).expanduser().resolve()
        if (root / MARKER_FILE).exists():
            if exist_ok:
                return cls.open(root)
            raise EmbedstoreError(f"{root} is already a store; open it, or choose another path")
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise EmbedstoreError(
                f"{root} exists and is not an empty directory; choose a new path for the store"
            )
        root.mkdir(parents=True, exist_ok=True)
        try:
            db = lancedb.connect(str(root))
            for name, schema in CORE_SCHEMAS.items():
                db.create_table(name, schema=schema)
            marker = {
                "format": "embedstore",
                "format_version": STORE_FORMAT_VERSION,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            (root / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cls(root)

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open an existing store; NotAStoreError when `path` holds none."""
        root = Path(path).expanduser().resolve()
        marker_path = root / MARKER_FILE
        if not marker_path.exists():
            raise NotAStoreError(
                f"{root} is not an embedstore store; create one with `embedstore init {path}`"
            )
        try:
            marker = json.loads(marker_path.read_text())
        except json.JSONDecodeError:
            raise NotAStoreError(
                f"{marker_path} is damaged (not JSON); restore it or re-create the store"
            ) from None
        version = marker.get("format_version")
        if version != STORE_FORMAT_VERSION:
            raise NotAStoreError(
                f"{root} has store format {version}, this embedstore reads format {STORE_FORMAT_VERSION}; "
                "upgrade embedstore"
            )
        return cls(root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- tables -----------------------------------------------------------------------------------------

    def table_names(self) -> list[str]:
        """All tables in the store, core tables first."""
        names = set(self.db.list_tables().tables)
        core = [name for name in CORE_SCHEMAS if name in names]
        return core + sorted(names - set(core))

    def embedding_table_names(self) -> list[str]:
        return [name for name in self.table_names() if name.startswith(EMBEDDING_PREFIX)]

    def table(self, name: str, version: int | str | None = None) -> lancedb.table.Table:
        """A LanceDB table, at its newest version or checked out at an older `version` (number or tag)."""
        if name not in self.table_names():
            raise EmbedstoreError(
                f"no table {name!r} in {self.root}; tables: {', '.join(self.table_names())}"
            )
        table = self.db.open_table(name)
        if version is not None:
            _versions.checkout(table, name, version)
        return table

    def read(self, name: str, version: int | str | None = None, columns: list[str] | None = None) -> pa.Table:
        """A whole table (or some columns) as Arrow, at the newest or an older version."""
        return self.table(name, version).to_lance().to_table(columns=columns)

    def tile_ids(self) -> set[str]:
        """Ids of every tile in the store."""
        return set(self.read(TILES, columns=["tile_id"]).column("tile_id").to_pylist())

    # -- versions -----------------------------------------------------------------------------------------

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Versions of one table, oldest first: version, timestamp, rows, tags."""
        return _versions.list_versions(self.table(name))

    def restore(self, name: str, version: int | str) -> int:
        """Make an older version (number or tag) of a table the newest; returns the new version number."""
        return _versions.restore(self.table(name), name, version)

    def tag(self, name: str, tag: str, version: int | None = None) -> int:
        """Name a version of a table (default: the newest) so compaction keeps it; returns the version."""
        return _versions.tag(self.table(name), name, tag, version)

    def compact(self, older_than: timedelta = timedelta(days=7)) -> dict[str, dict[str, int]]:
        """Compact every table's fragments and remove untagged versions older than `older_than`."""
        return {name: _versions.compact(self.table(name), older_than) for name in self.table_names()}

    # -- filling and describing -----------------------------------------------------------------------------

    def ingest(self, paths: list[str | Path], options: IngestOptions | None = None, **kwargs) -> IngestReport:
        """Ingest slides, image folders, manifests or point tables; options: `embedstore.IngestOptions`."""
        from .ingest import IngestOptions, ingest

        return ingest(self, [Path(p) for p in paths], options or IngestOptions(**kwargs))

    def import_labels(self, task: str, path: str | Path) -> int:
        """Labels for existing tiles from a CSV (tile_id,label or source,x,y,label); returns rows written."""
        from .labels import import_labels

        return import_labels(self, task, Path(path))

    def embed(self, backbone: str, **options: Any) -> EmbedReport:
        """Embed tiles not yet in `emb__<backbone>`; options: `embedstore.embed.EmbedOptions`."""
        from .embed import embed

        return embed(self, backbone, **options)

    def embeddings(self, backbone: str, **options: Any):
        """Stored vectors joined with tile metadata (and a task's labels): Arrow batches, polars or numpy.

        See `embedstore.embeddings.embeddings` for the options (columns, filter, task, views, as_).
        """
        from .embeddings import embeddings

        return embeddings(self, backbone, **options)

    def info(self) -> dict[str, Any]:
        """A summary: sources (ok / failed), tiles, tasks with label counts, tables, disk size."""
        from .info import store_info

        return store_info(self)


def open(path: str | Path) -> Store:  # noqa: A001 - `embedstore.open` reads naturally
    """Open the store at `path`."""
    return Store.open(path)


def init(path: str | Path, exist_ok: bool = False) -> Store:
    """Create a store at `path`."""
    return Store.init(path, exist_ok=exist_ok)
