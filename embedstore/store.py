"""The façade: `Store`, a catalog with the verbs (ingest, embed, embeddings, labels, info, check, repair).

Nothing below this module imports it; the verbs live in their own modules and take a catalog, so each
can be used (and tested) without the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import Catalog

if TYPE_CHECKING:
    from .check import CheckReport
    from .embed import EmbedOptions, EmbedReport
    from .embeddings import EmbeddingQuery
    from .ingest import IngestOptions, IngestReport
    from .label_options import LabelImportOptions, LabelImportReport
    from .probe import ProbeOptions, ProbeReport
    from .search import IndexManifest, IndexOptions, Searcher, SearchOptions, SearchResult
    from .search.configs import IndexConfig


class Store(Catalog):
    """An embedstore store. Create one with `embedstore.init(path)`, open one with `embedstore.open(path)`."""

    def ingest(
        self, paths: list[str | Path], options: IngestOptions | None = None, **kwargs: Any
    ) -> IngestReport:
        """Ingest slides, image folders, manifests or point tables; options: `embedstore.IngestOptions`."""
        from .ingest.local import ingest

        return ingest(self, [Path(p) for p in paths], options, **kwargs)

    def import_labels(
        self, task: str, path: str | Path, options: LabelImportOptions | None = None, **kwargs: Any
    ) -> LabelImportReport:
        """Labels for existing tiles from a CSV/Parquet (tile_id,label or source,x,y,label), as written;
        options: `embedstore.LabelImportOptions` (empty labels, conflicting rows)."""
        from .labels import import_labels

        return import_labels(self, task, Path(path), options, **kwargs)

    def embed(self, backbone: str, options: EmbedOptions | None = None, **kwargs: Any) -> EmbedReport:
        """Embed tiles not yet in `emb__<backbone>`; options: `embedstore.EmbedOptions`."""
        from .embed.local import embed

        return embed(self, backbone, options, **kwargs)

    def embeddings(self, backbone: str) -> EmbeddingQuery:
        """A query over the stored vectors of `backbone`: `.where().task().views().at()`, then
        `.to_batches()`, `.to_numpy()`, `.to_polars()` or `.count()` (see `embedstore.embeddings`)."""
        from .embeddings import EmbeddingQuery

        return EmbeddingQuery.of(self, backbone)

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
        from .search.indexes import build_index
        from .search.options import IndexOptions
        from .validation import options_from

        manifest = build_index(self, backbone, options_from(IndexOptions, options, kwargs), config, say)
        self._searchers().clear()
        return manifest

    def indexes(self, backbone: str | None = None) -> list[IndexManifest]:
        """The manifests of the store's indexes (of one backbone, or all)."""
        from .embeddings import EmbeddingQuery
        from .search.indexes import list_indexes

        return list_indexes(self, EmbeddingQuery.of(self, backbone).table if backbone else None)

    def searcher(self, backbone: str, index: str | None = None, update: bool = True) -> Searcher:
        """A loaded index with the tiles' metadata, kept for later searches of this Store object."""
        from .search.searcher import Searcher

        cache = self._searchers()
        key = (backbone, index, update)
        if key not in cache:
            cache[key] = Searcher(self, backbone, index, update)
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
        from .search.options import SearchOptions
        from .validation import options_from

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
        from .probe.options import ProbeOptions
        from .probe.run import run_probe
        from .validation import options_from

        options = options_from(ProbeOptions, options, kwargs)
        return run_probe(self, task, backbones, options, progress=progress, say=say)

    def _searchers(self) -> dict[tuple, Searcher]:
        if not hasattr(self, "_searcher_cache"):
            self._searcher_cache: dict[tuple, Searcher] = {}
        return self._searcher_cache

    def info(self) -> dict[str, Any]:
        """A summary: sources (ok / failed), files, tiles, tasks with label counts, tables, the saved
        indexes and heads with the table versions they are bound to and whether the table moved on since
        (`indexes`, `heads`), disk size."""
        from .info import store_info

        return store_info(self)

    def check(self) -> CheckReport:
        """Verify the store like a filesystem check: duplicate keys, orphans, provenance, failed sources."""
        from .check import check_store

        return check_store(self)

    def repair(self) -> CheckReport:
        """Remove duplicate keys and orphans, one new version per table changed; returns what was done."""
        from .check import repair_store

        return repair_store(self)


def open(path: str | Path) -> Store:  # noqa: A001 - `embedstore.open` reads naturally
    """Open the store at `path`."""
    return Store.open(path)


def init(path: str | Path, exist_ok: bool = False) -> Store:
    """Create a store at `path` (with exist_ok, open it when it is already one)."""
    return Store.create(path, exist_ok=exist_ok)
