"""Similarity search over one backbone's index: queries, fusion, negatives, filters, hits with metadata.

    searcher = Searcher(store, "tf_efficientnet_lite0.in1k")
    result = searcher.search(tiles=["a1b2..."], negatives=["c3d4..."], options=SearchOptions(k=100))
    result.hits            # polars: rank, tile_id, score, source_id, slide, x, y, ...

A searcher loads its index and the tiles' metadata once, then answers each query in milliseconds. Before
each search it checks the table's version (a cheap call): rows embedded meanwhile are added to the index
(or, without `update`, the search is refused), so results never come from a stale index.

Scores: every candidate is re-scored exactly (cosine, or -squared L2). Cosine is centred as
`SearchOptions.center` says (see centring.py): `pool` (default) on the mean of the tiles the filters
(--where, --exclude-task) leave, `index` as the index was built, `none` raw; queries are centred like the
candidates. Exact and approximate: in the index's own centring (`index`, or `pool` with no filter on an
index centred on the table with no row added since) candidates come from the index as before (exact for
flat indexes). Otherwise the stored vectors are re-centred exactly (from each row's stored length); a pool
of up to EXACT_POOL tiles is scanned whole, so the result is exact; in a larger pool the index proposes
RECENTRED_FACTOR x more candidates, re-scored exactly, so a hit the index's own space ranks far lower
can be missed. Several positives are fused by `mean` (one query: their normalised mean) or `rrf` (each
positive ranks the candidates; score = sum of 1 / (60 + rank)). Negatives subtract `negative_weight` x
the candidate's similarity to its nearest negative before ranking. Before searching, the positives are
checked against each other and a sample of the pool (query_check.py): `result.query_check` names outliers
and incoherent sets, and `drop_outliers` searches without the outliers.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..core.errors import EmbedstoreError
from ..core.ids import IdLookup
from ..core.reports import JsonReport
from ..core.schema import LABELS, TILES, task_predicate
from ..core.validation import options_from, output_file
from ..embeddings import METADATA_COLUMNS, EmbeddingTable, tile_filter
from ..evaluate.space import VectorSpace
from ..storage.catalog import Catalog, HasCatalog, catalog_of
from .centring import Centring, pool_mean
from .indexes import IndexOptions, Say, build_index, norms_from_table, open_index, refresh
from .manifest import IndexManifest
from .options import SearchOptions
from .query_check import QueryCheck, check_positives, sample_positions

RRF_K = 60  # the usual reciprocal-rank-fusion constant
POOL_FACTOR = 4  # candidates asked of the index per hit wanted, before filters and negatives
MIN_POOL = 64
EXACT_AFTER = 16_384  # when filters leave too few candidates in a pool this large, scan the allowed rows
EXACT_POOL = 65_536  # re-centred searches scan pools up to this size whole (exact)
RECENTRED_FACTOR = 8  # larger pools: this many times more candidates asked of the index
SCAN_CHUNK = 65_536


@dataclass
class SearchResult(JsonReport):
    """The hits (best first) and what produced them. `hits` is a polars frame, `table` the same as Arrow."""

    table: pa.Table
    index: IndexManifest
    query_tile_ids: list[str] = field(default_factory=list)
    negative_tile_ids: list[str] = field(default_factory=list)
    query_images: list[tuple[str, np.ndarray]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    centring: str = ""  # what the scores were centred on: pool | table | none | l2
    centring_text: str = ""  # the same in words, e.g. "cosine centred on the pool's mean (2,000 tiles ...)"
    query_check: QueryCheck = field(default_factory=QueryCheck)  # do the positives agree? (query_check.py)

    @property
    def index_name(self) -> str:
        return self.index.name

    def described(self) -> str:
        """One line: which index and which centring produced the scores."""
        return f"{self.index.described()}; scores: {self.centring_text}"

    @functools.cached_property
    def hits(self) -> pl.DataFrame:
        """rank, tile_id, score and the tile metadata (converted from `table` on first use)."""
        frame = pl.from_arrow(self.table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    def summary(self) -> str:
        """How many hits from which index and centring (the line `embedstore search` ends with), and notes."""
        lines = [f"{self.hits.height} hit(s) from {self.described()}"]
        warning = self.query_check.warning()
        lines += [f"warning: {warning}"] if warning else []
        return "\n".join(lines + [f"note: {note}" for note in self.notes])

    def to_dict(self) -> dict[str, Any]:
        """The hits (`to_records`) with the queries, index, centring, notes and seconds."""
        return {
            "index": self.index.name,
            "centring": self.centring,
            "centring_text": self.centring_text,
            "query_tile_ids": self.query_tile_ids,
            "query_images": [name for name, _ in self.query_images],
            "negative_tile_ids": self.negative_tile_ids,
            "notes": self.notes,
            "query_check": self.query_check.to_dict(),
            "seconds": self.seconds,
            "hits": self.to_records(),
        }

    def to_records(self) -> list[dict[str, Any]]:
        """The hits as plain dicts (tile_id, score, rank and the tile metadata), for JSON; each also names
        the index and the centring of its score."""
        extra = {"index": self.index.name, "centring": self.centring}
        return [{**row, **extra} for row in self.table.to_pylist()]

    def text_table(self, store: Catalog | HasCatalog, label_task: str | None = None) -> list[str]:
        """The hits as `embedstore search` prints them: a header line, then rank, score, file (or tile id),
        slide, position and the label for `label_task` (default: the store's only task), one hit a line."""
        from .hits_table import format_table, hits_rows, shown_task

        catalog = catalog_of(store)
        return format_table(hits_rows(self.hits, catalog, shown_task(catalog, label_task)))

    def export_labels(self, path: str | Path, label: str = "candidate") -> Path:
        """A CSV that `embedstore labels import` reads: tile_id, label (plus score and rank)."""
        path = output_file("--export", path, make_folder=True)
        frame = self.hits.select("tile_id", pl.lit(label).alias("label"), "score", "rank")
        frame.write_csv(path)
        return path

    def write_html(self, path: str | Path, store: Catalog | HasCatalog, task: str = "review") -> Path:
        """The review page: queries, then candidates to mark positive / negative / unsure (`store`: the
        Store or Catalog searched)."""
        from .review import write_review_page

        return write_review_page(
            catalog_of(store),
            self.hits,
            output_file("--html", path, make_folder=True),
            query_tile_ids=self.query_tile_ids,
            query_images=self.query_images,
            negative_tile_ids=self.negative_tile_ids,
            warning=self.query_check.warning(),
            task=task,
            title=f"embedstore review: {self.index.backbone}",
        )


class Searcher:
    """An index and the tiles' metadata, loaded once; `search` answers queries against them."""

    def __init__(
        self,
        store: Catalog | HasCatalog,
        backbone: str,
        index: str | None = None,
        update: bool = True,
        device: str = "auto",
        say: Say | None = None,
    ) -> None:
        catalog = catalog_of(store)
        self.catalog, self.update, self.say = catalog, update, say
        self.notes: list[str] = []
        loaded = open_index(catalog, backbone, index, device)
        if loaded is None:
            manifest = build_index(catalog, backbone, IndexOptions(device=device), say=say)
            self.notes.append(f"no index yet: built {manifest.summary()}")
            loaded = open_index(catalog, backbone, manifest.name, device)
        assert loaded is not None
        self.loaded = loaded
        self._table = EmbeddingTable.of(catalog, loaded.manifest.table)
        self._tiles = catalog.dataset(TILES)
        self._masks: dict[tuple, np.ndarray] = {}
        self._samples: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        if self._table.latest_version() != loaded.manifest.table_version:
            self._bring_up_to_date()
        self._load_metadata()

    @property
    def manifest(self) -> IndexManifest:
        return self.loaded.manifest

    # -- keeping up with the store --------------------------------------------------------------------

    def _check_fresh(self) -> None:
        """Bring the index up to date when the table changed; reload metadata when the tiles changed."""
        table_version = self._table.latest_version()
        tiles_version = self._tiles.latest_version
        if table_version != self.manifest.table_version:
            self._bring_up_to_date()
            self._load_metadata()
        elif tiles_version != self._tiles_version:
            self._load_metadata()

    def _bring_up_to_date(self) -> None:
        added = refresh(self.catalog, self.loaded, self.update, self.say)
        if added:
            self.notes.append(f"added {added} rows embedded since the index was built")
        self._table = self._table.latest()

    def _load_metadata(self) -> None:
        """Tile metadata (no pixels) aligned to index positions; positions whose tile left the store are
        never returned."""
        self._tiles = self.catalog.dataset(TILES)
        self._tiles_version = self._tiles.latest_version
        tiles = self._tiles.to_table(columns=["tile_id", *METADATA_COLUMNS])
        ids = self.loaded.tile_ids
        self._position = IdLookup(ids)
        rows, found = IdLookup(tiles.column("tile_id")).find(ids)
        self._metadata = tiles.combine_chunks()
        self._meta_row = rows
        self._valid = found
        group = pc.coalesce(tiles.column("slide"), tiles.column("source_id"))  # a slide, else its source
        group = group.to_numpy(zero_copy_only=False).astype(str)
        _, codes = np.unique(group, return_inverse=True)
        self._slide = np.where(found, codes[rows] if len(codes) else 0, -1)
        self._slide_order = np.argsort(self._slide, kind="stable")  # positions grouped by slide
        self._slide_sorted = self._slide[self._slide_order]
        self._masks.clear()
        self._samples.clear()

    # -- searching ------------------------------------------------------------------------------------

    def search(
        self,
        tiles: Sequence[str] = (),
        images: Sequence[str | Path] = (),
        vectors: np.ndarray | None = None,
        negatives: Sequence[str] = (),
        options: SearchOptions | None = None,
        **kwargs: Any,
    ) -> SearchResult:
        """Hits for the positives given as tile ids, image files and/or raw vectors (see SearchOptions)."""
        options = options_from(SearchOptions, options, kwargs)
        started = time.perf_counter()
        notes, self.notes = self.notes, []
        self._check_fresh()
        notes += self.notes
        self.notes = []
        space = self.loaded.space
        tiles, negatives = list(dict.fromkeys(tiles or ())), list(dict.fromkeys(negatives or ()))
        both = [t for t in negatives if t in set(tiles)]
        if both:
            raise EmbedstoreError(
                f"--negative {both[0]!r} is also a --tile: a tile cannot be both a positive and a negative "
                "(every score would cancel); give it once"
            )
        query_positions = self._positions(tiles, "--tile")
        negative_positions = self._positions(negatives, "--negative")
        rows = len(self.loaded.tile_ids)
        if options.k > rows:
            raise EmbedstoreError(
                f"-k {options.k} is more than the {rows} vectors in {self.manifest.table}; "
                f"use -k {rows} or less"
            )
        base_key, base = self._base(options)
        centring = self._centring(options, base_key, base)
        space = centring.space
        parts = [self._stored(query_positions, centring)] if len(query_positions) else []
        query_images: list[tuple[str, np.ndarray]] = []
        if images:
            from ..embed.images import embed_image_files

            raw, decoded = embed_image_files(self.catalog, self.manifest.table, [Path(p) for p in images])
            parts.append(space.prepare(raw))
            query_images = [(Path(p).name, rgb) for p, rgb in zip(images, decoded, strict=True)]
        if vectors is not None:
            parts.append(self._prepared_vectors(vectors, space))
        if not parts:
            raise EmbedstoreError(
                "nothing to search with: give --tile ID, --image FILE or --vectors FILE.npy"
            )
        positives = np.concatenate(parts)
        names = tiles + [name for name, _ in query_images]
        names += [f"vector {i}" for i in range(len(positives) - len(names))]
        negative_vectors = self._stored(negative_positions, centring) if len(negative_positions) else None
        allowed = self._allowed(options, base, query_positions, negative_positions)
        total = int(allowed.sum())
        if total == 0:
            raise EmbedstoreError("the filters leave no tile to search; loosen --where / --exclude-* options")
        if options.k > total:
            notes.append(f"only {total} tiles pass the filters; returning {total} of the {options.k} asked")
        k = min(options.k, total)
        check = self._check(positives, names, base_key, base, query_positions, centring)
        if options.drop_outliers and check.outliers and len(check.outliers) < len(names):
            positives = positives[[not p.outlier for p in check.positives]]
            check.dropped = [p.name for p in check.outliers]
        probes = positives if options.fusion == "rrf" and len(positives) > 1 else space.combine(positives)
        candidates = self._candidates(probes, allowed, k, total, centring)
        scores = self._scores(candidates, positives, negative_vectors, options, centring)
        order = np.lexsort((candidates, -scores))[:k]
        hits = self._frame(candidates[order], scores[order])
        notes += self.notes  # from choosing the centring (an older index's row lengths read)
        self.notes = []
        return SearchResult(
            hits,
            self.manifest,
            query_tile_ids=tiles,
            negative_tile_ids=negatives,
            query_images=query_images,
            notes=notes,
            seconds=time.perf_counter() - started,
            centring=centring.name,
            centring_text=centring.text,
            query_check=check,
        )

    def _check(
        self,
        positives: np.ndarray,
        names: list[str],
        key: tuple,
        base: np.ndarray,
        queries: np.ndarray,
        centring: Centring,
    ) -> QueryCheck:
        """The query check of the positives against a sample of the pool (cached per pool and centring)."""
        if len(positives) < 2:
            return QueryCheck()
        sample_key = ("sample", centring.name, *key)
        if sample_key not in self._samples:
            positions = sample_positions(base)
            self._samples[sample_key] = (positions, self._stored(positions, centring))
        positions, vectors = self._samples[sample_key]
        keep = ~np.isin(positions, queries)  # the positives are not part of the data they are judged by
        return check_positives(self.loaded.space, positives, names, vectors, keep)

    def _positions(self, tile_ids: list[str], flag: str) -> np.ndarray:
        positions, found = self._position.find(np.asarray(tile_ids, dtype=str))
        if found.all():
            return positions
        missing = [t for t, ok in zip(tile_ids, found, strict=True) if not ok]
        known = self.catalog.tile_ids()
        unknown = [t for t in missing if t not in known]
        if unknown:
            raise EmbedstoreError(f"{flag} {unknown[0]!r}: no such tile in {self.catalog.root}")
        raise EmbedstoreError(
            f"{flag} {missing[0]!r} has no vector in {self.manifest.table}; run `embedstore embed "
            f"{self.catalog.root} --backbone {self.manifest.backbone}` first"
        )

    def _prepared_vectors(self, vectors: np.ndarray, space: VectorSpace) -> np.ndarray:
        """Raw query vectors checked, then prepared like the candidates; one line naming the first bad row."""
        prepared = space.prepare(self._checked_vectors(vectors))
        problem = space.query_problem(prepared)
        if problem is not None:
            raise EmbedstoreError(f"--vectors row {problem[0]} {problem[1]}; give another vector")
        return prepared

    def _checked_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) float32 from numbers that are finite and within float32's range."""
        given = np.asarray(vectors)
        dim = self.manifest.dim
        if given.dtype.kind not in "biuf":
            raise EmbedstoreError(
                f"--vectors holds {given.dtype} values; give (n, {dim}) real numbers (float or integer)"
            )
        array = given.astype(np.float64)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != dim or len(array) == 0:
            raise EmbedstoreError(
                f"--vectors has shape {tuple(np.shape(vectors))}; {self.manifest.table} holds "
                f"{dim}-d vectors: give (n, {dim}) float values"
            )
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        if len(bad):
            raise EmbedstoreError(f"--vectors row {bad[0]} holds NaN or infinite values")
        bad = np.flatnonzero((np.abs(array) > np.finfo(np.float32).max).any(axis=1))
        if len(bad):
            raise EmbedstoreError(
                f"--vectors row {bad[0]} holds values beyond float32's range (±3.4e38); scale it down"
            )
        return array.astype(np.float32)

    def _base(self, options: SearchOptions) -> tuple[tuple, np.ndarray]:
        """The pool: positions in the store passing the filters (the same for a series of queries)."""
        key = ("base", options.where, options.exclude_task, self._labels_version(options.exclude_task))
        if key not in self._masks:
            base = self._valid.copy()
            if options.where:
                base &= self._where_mask(options.where)
            if options.exclude_task:
                base &= ~self._labelled_mask(options.exclude_task)
            self._masks[key] = base
        return key, self._masks[key]

    def _allowed(
        self, options: SearchOptions, base: np.ndarray, queries: np.ndarray, negatives: np.ndarray
    ) -> np.ndarray:
        """Positions a hit may take: in the pool, neither a query nor a negative (nor of their slides)."""
        allowed = base.copy()  # the per-query part below touches only the queries' own slides
        if options.exclude_query_slides and len(queries):
            for code in np.unique(self._slide[queries]):
                start, end = np.searchsorted(self._slide_sorted, [code, code + 1])
                allowed[self._slide_order[start:end]] = False
        allowed[queries] = False
        allowed[negatives] = False
        return allowed

    def _centring(self, options: SearchOptions, key: tuple, base: np.ndarray) -> Centring:
        """The centring this search applies (see the module's docstring)."""
        manifest, own = self.manifest, self.loaded.space
        if manifest.metric != "cosine":
            return Centring("l2", "-squared L2 distance (centring does not apply to l2)", own)
        index_mean = own.mean
        pool_is_index = manifest.rows_added == 0 and not options.exclude_task  # the index's own mean
        pool_is_index &= (manifest.centring, options.where) in (
            ("table", None),
            ("subset", manifest.centered_on_where),
        )
        same_as_index = options.center == "index" or (options.center == "pool" and pool_is_index)
        if same_as_index or (options.center == "none" and index_mean is None):
            if manifest.centring == "none":
                text = "raw cosine (not centred)"
            else:
                what = (
                    "table" if manifest.centring == "table" else f"tiles where {manifest.centered_on_where}"
                )
                text = f"cosine centred on the index's mean ({what} @ v{self._mean_version()})"
            if options.center == "pool":
                why = "no filter" if options.where is None else "the same --where"
                text += f", which is the pool's: {why} ({int(base.sum()):,} tiles)"
            return Centring(manifest.centring, text, own)
        norms = self._norms()
        if options.center == "none":
            assert index_mean is not None  # the case without an index mean returned above
            space = VectorSpace("cosine", None)
            return Centring("none", "raw cosine (not centred)", space, -index_mean)
        mean_key = ("mean", *key)
        if mean_key not in self._masks:
            positions = np.flatnonzero(base)
            self._masks[mean_key] = pool_mean(self.loaded.backend.vectors, norms, index_mean, positions)
        mean = self._masks[mean_key]
        filters = [
            flag for flag, on in (("--where", options.where), ("--exclude-task", options.exclude_task)) if on
        ]
        after = f"after {' and '.join(filters)}" if filters else "all of the table"
        text = f"cosine centred on the pool's mean ({int(base.sum()):,} tiles, {after})"
        offset = mean - index_mean if index_mean is not None else mean
        return Centring("pool", text, VectorSpace("cosine", mean, "the pool's mean"), offset)

    def _mean_version(self) -> int:
        return self.manifest.mean_version or self.manifest.built_from_version

    def _norms(self) -> np.ndarray:
        """Each row's stored length (read from the table once for an index saved before it kept them)."""
        if self.loaded.norms is None:
            self.loaded.norms = norms_from_table(self.catalog, self.loaded)
            self.notes.append(
                f"index {self.manifest.name!r} was saved before it kept row lengths: read them from "
                f"{self.manifest.table} to re-centre (rebuild the index to skip this)"
            )
        return self.loaded.norms

    def _stored(self, positions: np.ndarray, centring: Centring) -> np.ndarray:
        """The index's vectors at `positions` as this search compares them."""
        vectors = self.loaded.backend.vectors(positions)
        norms = self.loaded.norms[positions] if centring.recentred and self.loaded.norms is not None else None
        return centring.stored(vectors, norms)

    def _labels_version(self, task: str | None) -> int | None:
        return None if task is None else int(self.catalog.dataset(LABELS).version)

    def _where_mask(self, predicate: str) -> np.ndarray:
        key = ("where", predicate, self._tiles_version)
        if key not in self._masks:
            checked = tile_filter(self.catalog, predicate)
            ids = self._tiles.to_table(columns=["tile_id"], filter=checked).column("tile_id")
            self._masks[key] = self._mask_of(ids)
        return self._masks[key]

    def _labelled_mask(self, task: str) -> np.ndarray:
        labels = self.catalog.dataset(LABELS)
        key = ("task", task, labels.version)
        if key not in self._masks:
            ids = labels.to_table(columns=["tile_id"], filter=task_predicate(task)).column("tile_id")
            if len(ids) == 0:
                tasks = sorted(set(labels.to_table(columns=["task"]).column("task").to_pylist()))
                raise EmbedstoreError(
                    f"--exclude-task {task!r}: no tile is labelled for that task; "
                    f"tasks: {', '.join(tasks) or 'none yet'}"
                )
            self._masks[key] = self._mask_of(ids)
        return self._masks[key]

    def _mask_of(self, tile_ids: pa.ChunkedArray) -> np.ndarray:
        mask = np.zeros(len(self.loaded.tile_ids), dtype=bool)
        positions, found = self._position.find(tile_ids)
        mask[positions[found]] = True
        return mask

    def _candidates(
        self, probes: np.ndarray, allowed: np.ndarray, k: int, total: int, centring: Centring
    ) -> np.ndarray:
        """Positions the index proposes that pass the filters: at least k of them, or every allowed one
        (always every allowed one for a re-centred search of a pool up to EXACT_POOL tiles)."""
        rows = len(allowed)
        pool = max(POOL_FACTOR * k, MIN_POOL)
        if centring.recentred:
            if total <= EXACT_POOL:
                return np.flatnonzero(allowed)
            pool *= RECENTRED_FACTOR
        while True:
            found = self.loaded.backend.search(probes, min(pool, rows))
            found = np.unique(found[found >= 0])
            found = found[allowed[found]]
            if len(found) >= k or pool >= rows:
                return found
            if pool >= EXACT_AFTER or total <= pool:
                return np.flatnonzero(allowed)  # filters leave few rows: re-score them all
            pool *= 4

    def _scores(
        self,
        candidates: np.ndarray,
        positives: np.ndarray,
        negatives: np.ndarray | None,
        options: SearchOptions,
        centring: Centring,
    ) -> np.ndarray:
        """Exact scores of the candidates (in chunks, so a filter-driven scan stays small in memory)."""
        if options.fusion == "rrf" and len(positives) > 1:
            return self._rrf(candidates, positives, negatives, options, centring)
        space = self.loaded.space
        query = space.combine(positives)
        out = np.empty(len(candidates), dtype=np.float32)
        for start in range(0, len(candidates), SCAN_CHUNK):
            vectors = self._stored(candidates[start : start + SCAN_CHUNK], centring)
            out[start : start + len(vectors)] = space.similarity(query, vectors)[0] - self._penalty(
                negatives, vectors, options
            )
        return out

    def _penalty(self, negatives: np.ndarray | None, vectors: np.ndarray, options: SearchOptions) -> Any:
        """negative_weight x each vector's similarity to its nearest negative (0 without negatives)."""
        if negatives is None or options.negative_weight == 0:
            return 0.0
        return options.negative_weight * self.loaded.space.similarity(negatives, vectors).max(axis=0)

    def _rrf(
        self,
        candidates: np.ndarray,
        positives: np.ndarray,
        negatives: np.ndarray | None,
        options: SearchOptions,
        centring: Centring,
    ) -> np.ndarray:
        """Sum over positives of 1 / (RRF_K + the candidate's rank by that positive)."""
        space = self.loaded.space
        vectors = self._stored(candidates, centring)
        similarity = space.similarity(positives, vectors) - self._penalty(negatives, vectors, options)
        ranks = np.empty_like(similarity, dtype=np.int64)
        order = np.argsort(-similarity, axis=1, kind="stable")
        np.put_along_axis(
            ranks, order, np.arange(1, len(candidates) + 1)[None, :].repeat(len(positives), 0), 1
        )
        return (1.0 / (RRF_K + ranks)).sum(axis=0).astype(np.float32)

    def _frame(self, positions: np.ndarray, scores: np.ndarray) -> pa.Table:
        """rank, tile_id, score and the tile metadata of the hits."""
        rows = self._metadata.take(pa.array(self._meta_row[positions])).combine_chunks()
        rows = rows.add_column(1, "score", pa.array(scores.astype(np.float64)))
        return rows.add_column(0, "rank", pa.array(np.arange(1, len(positions) + 1, dtype=np.int64)))
