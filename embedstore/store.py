"""The façade: `Store`, the verbs (ingest, embed, embeddings, index, search, probe, labels, tiles, info,
check, repair, versions) over a catalog it holds (`store.catalog`, the store's tables).

Nothing below this module imports it; the verbs live in their own modules and take a catalog, so each
can be used (and tested) without the others. A function below that accepts "a Store or a Catalog" gets
the catalog with `embedstore.storage.catalog.catalog_of`.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from .core.location import ObjectPath
from .storage.catalog import Catalog

if TYPE_CHECKING:
    from collections.abc import Sequence

    import polars as pl

    from .embed import EmbedOptions, EmbedReport
    from .embeddings import EmbeddingQuery
    from .ingest import IngestOptions, IngestReport
    from .maintenance.check import CheckReport
    from .maintenance.label_options import LabelImportOptions, LabelImportReport
    from .maintenance.tile_listing import TileListOptions
    from .probe import ProbeOptions, ProbeReport
    from .search import IndexManifest, IndexOptions, Searcher, SearchOptions, SearchResult
    from .search.configs import IndexConfig
    from .storage.catalog import StoreSettings
    from .storage.versions import CompactReport


# Catalog methods a Store handed on while it was a Catalog: they still work through a Store, with a
# DeprecationWarning naming `store.catalog.<name>`, for one release.
DEPRECATED_CATALOG_METHODS = frozenset(
    {
        "table_path",
        "table_names",
        "embedding_table_names",
        "has_table",
        "dataset",
        "read",
        "count",
        "tile_ids",
        "create_table",
        "remove_if_empty",
        "drop_table",
        "insert_missing",
        "upsert",
        "delete",
    }
)


class Store:
    """An embedstore store. Create one with `embedstore.init(path)`, open one with `embedstore.open(path)`.

    `catalog` (an `embedstore.storage.catalog.Catalog`): the store's tables, for tools that read or write
    tables themselves (`store.catalog.read("tiles", columns=[...])`, `.dataset`, `.upsert`, ...).
    """

    def __init__(self, catalog: Catalog | Path | ObjectPath) -> None:
        self.catalog = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
        self._searcher_cache: dict[tuple, Searcher] = {}

    @classmethod
    def create(cls, path: str | Path, exist_ok: bool = False) -> Self:
        """Create a new store at `path` (with exist_ok, open it when it is already one)."""
        return cls(Catalog.create(path, exist_ok=exist_ok))

    @classmethod
    def open(cls, path: str | Path | ObjectPath) -> Self:
        """Open an existing store; NotAStoreError when `path` holds none."""
        return cls(Catalog.open(path))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @property
    def root(self) -> Path | ObjectPath:
        """The store's directory (a `Path`, or an `ObjectPath` on object storage)."""
        return self.catalog.root

    @property
    def is_local(self) -> bool:
        """True for a store in a local directory, False for one on object storage."""
        return self.catalog.is_local

    def require_writable(self) -> None:
        """ReadOnlyStoreError (one line: the path and the fix) when this process may not write the store."""
        self.catalog.require_writable()

    if not TYPE_CHECKING:  # type checkers see no raw catalog methods on a Store: use `store.catalog`

        def __getattr__(self, name: str) -> Any:
            if name in DEPRECATED_CATALOG_METHODS:
                warnings.warn(
                    f"Store.{name} is deprecated: use store.catalog.{name} (Store keeps it for one release)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return getattr(self.catalog, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def ingest(
        self, paths: list[str | Path], options: IngestOptions | None = None, **kwargs: Any
    ) -> IngestReport:
        """Ingest slides, image folders, manifests or point tables; options: `embedstore.IngestOptions`."""
        from .ingest.local import ingest

        return ingest(self.catalog, [Path(p) for p in paths], options, **kwargs)

    def import_labels(
        self, task: str, path: str | Path, options: LabelImportOptions | None = None, **kwargs: Any
    ) -> LabelImportReport:
        """Labels for existing tiles from a CSV/Parquet (tile_id,label or source,x,y,label), as written;
        options: `embedstore.LabelImportOptions` (empty labels, conflicting rows)."""
        from .maintenance.labels import import_labels

        return import_labels(self.catalog, task, Path(path), options, **kwargs)

    def tiles(
        self,
        task: str | Sequence[str] | None = None,
        where: str | None = None,
        columns: str | Sequence[str] | None = None,
        limit: int | None = None,
        options: TileListOptions | None = None,
    ) -> pl.DataFrame:
        """Tiles with their file, slide, position, groups and labels, sorted by file, y, x (a polars frame).
        `task`: one task (a `label` column, its labelled tiles only) or several (`label_<task>` columns);
        `where`: SQL over tile columns; `columns`: which to return; see `embedstore.TileListOptions`."""
        from .maintenance.tile_listing import list_tiles

        given = {"task": task, "where": where, "columns": columns, "limit": limit}
        return list_tiles(self.catalog, options, **{k: v for k, v in given.items() if v is not None})

    def embed(self, backbone: str, options: EmbedOptions | None = None, **kwargs: Any) -> EmbedReport:
        """Embed tiles not yet in `emb__<backbone>`; options: `embedstore.EmbedOptions`."""
        from .embed.local import embed

        return embed(self.catalog, backbone, options, **kwargs)

    def embeddings(self, backbone: str) -> EmbeddingQuery:
        """A query over the stored vectors of `backbone`: `.where().task().views().at()`, then
        `.to_batches()`, `.to_numpy()`, `.to_polars()` or `.count()` (see `embedstore.embeddings`)."""
        from .embeddings import EmbeddingQuery

        return EmbeddingQuery.of(self.catalog, backbone)

    def index(
        self,
        backbone: str,
        options: IndexOptions | None = None,
        config: IndexConfig | None = None,
        say: Any = None,
        **kwargs: Any,
    ) -> IndexManifest:
        """Build (or rebuild) a similarity index over `backbone`'s vectors; options: `IndexOptions`
        (kind, metric, center, center_on, backend, name), `config`: one of `embedstore.search.configs`."""
        from .core.validation import options_from
        from .search.indexes import build_index
        from .search.options import IndexOptions

        options = options_from(IndexOptions, options, kwargs)
        manifest = build_index(self.catalog, backbone, options, config, say)
        self._searcher_cache.clear()
        return manifest

    def indexes(self, backbone: str | None = None) -> list[IndexManifest]:
        """The manifests of the store's indexes (of one backbone, or all)."""
        from .embeddings import EmbeddingQuery
        from .search.indexes import list_indexes

        table = EmbeddingQuery.of(self.catalog, backbone).table if backbone else None
        return list_indexes(self.catalog, table)

    def searcher(self, backbone: str, index: str | None = None, update: bool = True) -> Searcher:
        """A loaded index with the tiles' metadata, kept for later searches of this Store object."""
        from .search.searcher import Searcher

        cache = self._searcher_cache
        key = (backbone, index, update)
        if key not in cache:
            cache[key] = Searcher(self.catalog, backbone, index, update)
        return cache[key]

    def search(
        self,
        backbone: str,
        tiles: list[str] | tuple[str, ...] = (),
        images: list[str | Path] | tuple[str | Path, ...] = (),
        vectors: Any = None,
        negatives: list[str] | tuple[str, ...] = (),
        options: SearchOptions | None = None,
        **kwargs: Any,
    ) -> SearchResult:
        """Tiles most like the positives (tile ids, image files, vectors), best first; see `SearchOptions`
        (k, fusion, negative_weight, exclude_query_slides, exclude_task, where, index, update, center:
        pool | index | none). Builds an `auto` index on first use when the backbone has none;
        `result.described()` names the index and the centring used."""
        from .core.validation import options_from
        from .search.options import SearchOptions

        options = options_from(SearchOptions, options, kwargs)
        searcher = self.searcher(backbone, options.index, options.update)
        return searcher.search(tiles, images, vectors, negatives, options)

    def probe(
        self,
        task: str | None = None,
        backbones: str | list[str] = "all",
        options: ProbeOptions | None = None,
        progress: bool = False,
        say: Any = None,
        **kwargs: Any,
    ) -> ProbeReport:
        """Rank backbones on a labelled task with kNN, prototype and linear probes over the same
        group-aware folds, plus label-free indicators (alone when `task` is None); see `ProbeOptions`
        (group_by, folds, seeds, probes, knn_k, rank_k, metric, shots, shot_draws, inner_folds, alpha,
        bootstrap)."""
        from .core.validation import options_from
        from .probe.options import ProbeOptions
        from .probe.run import run_probe

        options = options_from(ProbeOptions, options, kwargs)
        return run_probe(self.catalog, task, backbones, options, progress=progress, say=say)

    def info(self) -> dict[str, Any]:
        """A summary: sources (ok / failed), files, tiles, tasks with label counts, tables, the saved
        indexes and heads with the table versions they are bound to and whether the table moved on since
        (`indexes`, `heads`), disk size."""
        from .maintenance.info import store_info

        return store_info(self.catalog)

    def check(self) -> CheckReport:
        """Verify the store like a filesystem check: duplicate keys, orphans, provenance, failed sources."""
        from .maintenance.check import check_store

        return check_store(self.catalog)

    def repair(self) -> CheckReport:
        """Remove duplicate keys and orphans, one new version per table changed; returns what was done."""
        from .maintenance.check import repair_store

        return repair_store(self.catalog)

    # -- versions -----------------------------------------------------------------------------------------

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Versions of one table, oldest first: version, timestamp, rows, tags."""
        return self.catalog.versions(name)

    def tag(self, name: str, tag: str, version: int | None = None) -> int:
        """Name a version of a table (default: the newest) so compaction keeps it; returns the version."""
        return self.catalog.tag(name, tag, version)

    def restore(self, name: str, version: int | str) -> int:
        """Make an older version (number or tag) of a table the newest; returns the new version number."""
        return self.catalog.restore(name, version)

    def compact(self, older_than: timedelta | str = timedelta(days=7)) -> CompactReport:
        """Remove every table's untagged versions older than `older_than` (a timedelta, or a duration like
        "7d", "12h", "0s") and merge fragments where that frees space; see `Catalog.compact`."""
        return self.catalog.compact(older_than)

    def settings(self) -> StoreSettings:
        """The store's settings (`version_retention`), kept in its `embedstore.json`."""
        return self.catalog.settings()

    def configure(self, version_retention: timedelta | str | None = None) -> StoreSettings:
        """Change the store's settings; `version_retention` (e.g. "3d"): how long the automatic
        compaction after `embed` and `ingest` keeps untagged versions. Returns the settings."""
        return self.catalog.configure(version_retention)


def open(path: str | Path) -> Store:  # noqa: A001 - `embedstore.open` reads naturally
    """Open the store at `path`."""
    return Store.open(path)


def init(path: str | Path, exist_ok: bool = False) -> Store:
    """Create a store at `path` (with exist_ok, open it when it is already one)."""
    return Store.create(path, exist_ok=exist_ok)
