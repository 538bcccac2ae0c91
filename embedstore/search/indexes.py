"""Indexes inside the store, bound to the version of the embedding table they were built from.

    <store>/indexes/<table>/<name>/manifest.json    what, from which table version, how, recall
                                   index-<token>.faiss | vectors-<token>.lance, ids-<token>.arrow
                                   (tile_id, and norm: each row's length before normalising)

Opening an index compares it with its table: rows embedded since are added (where `update`), a table that
lost rows or changed weights is refused with the command that rebuilds the index. A stale index is never
used silently.

On object storage there is no file lock: each save writes its files under new names and then the
manifest in one PUT, so two processes updating one index at once end with one of the two whole; files
no manifest names are removed only once an hour old (another process may be about to name them).
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from .._version import __version__
from ..core.errors import EmbedstoreError, ReadOnlyStoreError
from ..core.ids import IdLookup
from ..core.location import ObjectPath, StorePath, exclusive, is_inside, remove_inside
from ..core.schema import TILES
from ..core.validation import FileName, check_value
from ..embeddings import EmbeddingQuery, EmbeddingTable, tile_filter
from ..evaluate.space import VectorSpace
from ..storage import saved
from ..storage.catalog import Catalog
from . import streamed_ivfpq
from .configs import (
    FlatConfig,
    IndexConfig,
    IvfPqConfig,
    LanceConfig,
    config_for,
    config_from_dict,
    config_to_dict,
)
from .faiss_index import FaissIndex, check_device, faiss_version
from .lance_index import LanceIndex
from .manifest import MANIFEST, IndexManifest
from .options import IndexOptions
from .recall import tune
from .table_vectors import TableVectors

INDEX_DIR = saved.INDEX_DIR  # the folder `embedstore info` lists too
LOCK = ".lock"  # held while one process writes an index (readers never wait)
BUILDING = ".building-"  # a Lance copy being built, renamed once saved
UNREFERENCED_GRACE = timedelta(hours=1)  # on object storage: age before an unnamed file is removed
SAVED_FILE = re.compile(
    r"(ids-v\d+-[0-9a-f]{8}\.arrow|index-v\d+-[0-9a-f]{8}\.faiss|vectors-v\d+-[0-9a-f]{8}\.lance)"
)
Say = Callable[[str], None]


class StaleIndexError(EmbedstoreError):
    """An index no longer matches its table and cannot be brought up to date in place."""


@dataclass
class LoadedIndex:
    """An index ready to search: its manifest, backend, vector space and the tile id of each position."""

    manifest: IndexManifest
    backend: FaissIndex | LanceIndex
    space: VectorSpace
    tile_ids: np.ndarray  # (rows,) str, position -> tile id
    directory: Path | ObjectPath
    device: str = "auto"
    norms: np.ndarray | None = None  # (rows,) length of each row before normalising; None: older index


def index_root(catalog: Catalog, table: str) -> Path | ObjectPath:
    return catalog.root / INDEX_DIR / table


def list_indexes(catalog: Catalog, table: str | None = None) -> list[IndexManifest]:
    """Manifests of the store's indexes (of one embedding table, or all)."""
    root = catalog.root / INDEX_DIR
    pattern = f"{table}/*/{MANIFEST}" if table else f"*/*/{MANIFEST}"
    paths: list[StorePath] = sorted(root.glob(pattern))
    return [IndexManifest.load(path.parent) for path in paths]


def build_index(
    catalog: Catalog,
    backbone: str,
    options: IndexOptions | None = None,
    config: IndexConfig | None = None,
    say: Say | None = None,
) -> IndexManifest:
    """Build (or rebuild) an index over the view-0 vectors of `backbone`'s table at its newest version."""
    options = options or IndexOptions()
    say = say or (lambda _: None)
    check_device(options.device)  # before anything is read or created
    catalog.require_writable()
    table = EmbeddingTable.of(catalog, backbone)  # one version for the count, the vectors and the manifest
    query = table.query().columns()
    table_version = table.version
    provenance = table.provenance
    rows = query.count()
    if rows == 0:
        raise EmbedstoreError(
            f"{query.table} holds no vectors of tiles in the store; run `embedstore embed {catalog.root} "
            f"--backbone {provenance.backbone}` first"
        )
    config = _resolved_config(options, config, rows, provenance.dim)  # refuse before reading vectors
    name = check_value(
        "--name", options.index_name(config.kind if options.kind != "auto" else None), FileName()
    )
    centre_filter = tile_filter(catalog, options.center_on, "--center-on") if options.center_on else None
    directory = index_root(catalog, query.table) / name
    token = _token(table_version)
    with _writing(directory, token):  # locked, created by the store's write path; undone when it fails
        started = time.perf_counter()
        addresses = None
        if isinstance(config, IvfPqConfig):  # streamed from the table: never all vectors in memory
            say(
                f"building a faiss ivfpq index over {rows} vectors streamed from {query.table} "
                f"v{table_version}"
            )
            centre_ids = _centre_ids(catalog, options, centre_filter)
            built = streamed_ivfpq.build(
                query, config, options.metric, options.center, centre_ids, options.device, say
            )
            backend: FaissIndex | LanceIndex = built.backend
            space, tile_ids, norms, addresses = built.space, built.tile_ids, built.norms, built.addresses
            recall, queries, dim = built.recall, built.queries, provenance.dim
        else:
            say(f"reading the vectors of {query.table} (version {table_version})")
            raw, tile_ids, _ = query.to_numpy()
            space = VectorSpace.fit(
                options.metric, options.center, _centre_rows(catalog, options, centre_filter, raw, tile_ids)
            )
            vectors = space.prepare(raw)
            norms = space.lengths(raw)
            del raw
            dim = int(vectors.shape[1])
            say(f"building a {options.backend} {config.kind} index over {len(vectors)} vectors")
            if isinstance(config, LanceConfig):
                # a local build takes its final name once saved; object stores cannot rename: build in place
                local = isinstance(directory, Path)
                building = f"{BUILDING}{token}.lance" if local else f"vectors-{token}.lance"
                backend = LanceIndex.build(config, vectors, options.metric, directory / building)
            else:
                backend = FaissIndex.build(config, vectors, options.metric, options.device)
            recall, queries = None, 0
            if not isinstance(config, FlatConfig):
                say(f"tuning the search breadth to recall@10 >= {config.target_recall}")
                recall, queries = tune(backend, vectors, options.metric, config.target_recall)
            del vectors
        seconds = time.perf_counter() - started
        now = datetime.now(UTC).isoformat(timespec="seconds")
        manifest = IndexManifest(
            name=name,
            backend=options.backend,
            kind=config.kind,
            metric=options.metric,
            center=space.mean is not None,
            config=config_to_dict(backend.config),
            table=query.table,
            table_version=table_version,
            built_from_version=table_version,
            backbone=provenance.backbone,
            weights_sha256=provenance.weights_sha256,
            dim=dim,
            rows=len(tile_ids),
            build_seconds=round(seconds, 3),
            recall_at_10=None if recall is None else round(recall, 4),
            recall_queries=queries,
            files={},
            mean=None if space.mean is None else [float(v) for v in space.mean],
            centered_on=("subset" if options.center_on else "table") if space.mean is not None else "none",
            centered_on_where=options.center_on if space.mean is not None else None,
            mean_version=table_version if space.mean is not None else None,
            created=now,
            updated=now,
            versions={
                "embedstore": __version__,
                "faiss": faiss_version(),
                "pylance": package_version("pylance"),
            },
        )
        _save(directory, manifest, backend, tile_ids, token, norms, addresses)
    return manifest


def _centre_ids(catalog: Catalog, options: IndexOptions, predicate: str | None) -> pa.Array | None:
    """The tile ids `--center-on` (checked and parenthesised as `predicate`) selects; None without it."""
    if predicate is None:
        return None
    chosen = catalog.dataset(TILES).to_table(columns=["tile_id"], filter=predicate).column("tile_id")
    if len(chosen) == 0:
        raise EmbedstoreError(
            f"--center-on {options.center_on!r} selects no tile with a vector; check the expression "
            "(e.g. \"dataset = 'pcam'\")"
        )
    return chosen.combine_chunks()


def _centre_rows(
    catalog: Catalog, options: IndexOptions, predicate: str | None, raw: np.ndarray, tile_ids: np.ndarray
) -> np.ndarray:
    """The rows whose mean centres the index: all, or those of the tiles `--center-on` (checked and
    parenthesised as `predicate`) selects."""
    if predicate is None:
        return raw
    chosen = catalog.dataset(TILES).to_table(columns=["tile_id"], filter=predicate).column("tile_id")
    mask = pc.is_in(pa.array(np.asarray(tile_ids).astype(str)), value_set=chosen.cast(pa.string()))
    rows = raw[mask.to_numpy(zero_copy_only=False)]
    if len(rows) == 0:
        raise EmbedstoreError(
            f"--center-on {options.center_on!r} selects no tile with a vector; check the expression "
            "(e.g. \"dataset = 'pcam'\")"
        )
    return rows


@contextlib.contextmanager
def _writing(directory: Path | ObjectPath, token: str) -> Iterator[None]:
    """Build and save one index under its lock (which creates its folder: the store's write path). When
    the build fails, remove what it created: files named with its token, and the folders that did not
    exist before (when nothing else was put in them meanwhile)."""
    created = _absent_folders(directory)
    try:
        with exclusive(directory, LOCK):
            try:
                yield
            except BaseException:
                manifest = directory / MANIFEST
                if not (manifest.exists() and token in manifest.read_text()):  # not saved after all
                    for path in directory.iterdir():
                        if token in path.name:
                            remove_inside(path, directory)
                raise
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                if folder == directory and [p.name for p in folder.iterdir()] == [LOCK]:
                    (folder / LOCK).unlink()
                folder.rmdir()
        raise


def _absent_folders(directory: Path | ObjectPath) -> list[Path]:
    """`directory` and those of its parents that do not exist yet, deepest first (local paths only)."""
    if not isinstance(directory, Path):
        return []
    absent = []
    while not directory.exists():
        absent.append(directory)
        directory = directory.parent
    return absent


def open_index(
    catalog: Catalog, backbone: str, name: str | None = None, device: str = "auto"
) -> LoadedIndex | None:
    """The index `name` of `backbone`'s table (None: the only one, or `auto`), as saved; None when the
    table has none. Call `refresh` before searching it."""
    directory = _find(catalog, EmbeddingQuery.of(catalog, backbone).table, name)
    return None if directory is None else _load(catalog, directory, device)


def refresh(catalog: Catalog, loaded: LoadedIndex, update: bool = True, say: Say | None = None) -> int:
    """Compare the index with its table now; add new rows (with `update`), or refuse. Returns rows added."""
    manifest = loaded.manifest
    table = EmbeddingTable.of(catalog, manifest.table)
    current = table.version
    if current == manifest.table_version:
        return 0
    provenance = table.provenance
    rebuild = f"`embedstore index {catalog.root} --backbone {manifest.backbone} --name {manifest.name}`"
    if provenance.weights_sha256 != manifest.weights_sha256:
        raise StaleIndexError(
            f"index {manifest.name!r} was built from other weights than {manifest.table} now holds; "
            f"rebuild it with {rebuild}"
        )
    present = table.tile_ids(views=(0,))
    indexed = pa.array(loaded.tile_ids)
    lost = int(pc.sum(pc.invert(pc.is_in(indexed, value_set=present))).as_py() or 0)
    if lost:
        raise StaleIndexError(
            f"index {manifest.name!r} was built from version {manifest.table_version} of {manifest.table}; "
            f"{lost} of its rows are gone at version {current}; rebuild it with {rebuild}"
        )
    new_ids = present.filter(pc.invert(pc.is_in(present, value_set=indexed)))
    if len(new_ids) and not update:
        raise StaleIndexError(
            f"index {manifest.name!r} matches version {manifest.table_version} of {manifest.table}, which "
            f"has {len(new_ids)} new rows at version {current}; search with updates, or rebuild: {rebuild}"
        )
    source = _table_vectors(loaded)
    if isinstance(loaded.backend, FaissIndex) and _read_only(catalog):  # update it in memory, unsaved
        if source is not None:
            source.follow(current, loaded.tile_ids)
        added = _add_rows(catalog, loaded, current, new_ids, say) if len(new_ids) else 0
        manifest.table_version = current
        return added
    with exclusive(loaded.directory, LOCK):
        saved = IndexManifest.load(loaded.directory)
        if (saved.created, saved.updated) != (manifest.created, manifest.updated):
            changed = True  # another process rebuilt or updated it meanwhile: start from its version
        else:
            changed = False
            if source is not None:
                source.follow(current, loaded.tile_ids)
            added = _add_rows(catalog, loaded, current, new_ids, say) if len(new_ids) else 0
            manifest.table_version = current
            manifest.updated = datetime.now(UTC).isoformat(timespec="seconds")
            addresses = None if source is None else source.addresses
            _save(
                loaded.directory,
                manifest,
                loaded.backend,
                loaded.tile_ids,
                _token(current),
                loaded.norms,
                addresses,
            )
    if changed:
        before = len(loaded.tile_ids)
        vars(loaded).update(vars(_load(catalog, loaded.directory, loaded.device)))
        return max(0, len(loaded.tile_ids) - before) + refresh(catalog, loaded, update, say)
    return added


def _add_rows(catalog: Catalog, loaded: LoadedIndex, version: int, new_ids: pa.Array, say: Say | None) -> int:
    """Read the new rows' vectors (streamed in batches, tiles in the store only) and add them to the index;
    an index re-scored from the table also records their row addresses."""
    query = EmbeddingTable.of(catalog, loaded.manifest.table, version).query().columns().tiles(new_ids)
    source = _table_vectors(loaded)
    added = 0
    for raw, batch in query.to_numpy_batches(streamed_ivfpq.BATCH_ROWS, row_address=source is not None):
        if added == 0 and say:
            say(
                f"adding {len(new_ids)} rows embedded since version {loaded.manifest.table_version} to "
                f"index {loaded.manifest.name!r}"
            )
        loaded.backend.add(loaded.space.prepare(raw))
        if source is not None:
            source.extend(batch.column("row_address").to_numpy())
        if loaded.norms is not None:
            loaded.norms = np.concatenate([loaded.norms, loaded.space.lengths(raw)])
        ids = batch.column("tile_id").to_numpy(zero_copy_only=False)
        loaded.tile_ids = np.concatenate([loaded.tile_ids, np.asarray(ids).astype(str)])
        added += len(raw)
    loaded.manifest.rows = len(loaded.tile_ids)
    loaded.manifest.rows_added += added
    return added


def _table_vectors(loaded: LoadedIndex) -> TableVectors | None:
    """The table reader of an index re-scored from the table; None for indexes that hold their vectors."""
    backend = loaded.backend
    return (
        backend.exact if isinstance(backend, FaissIndex) and isinstance(backend.exact, TableVectors) else None
    )


def norms_from_table(catalog: Catalog, loaded: LoadedIndex) -> np.ndarray:
    """Each indexed row's length before normalising, from the raw vectors in the table at the index's
    version (for indexes saved before they kept it)."""
    table = EmbeddingTable.of(catalog, loaded.manifest.table, loaded.manifest.table_version)
    lookup = IdLookup(loaded.tile_ids)
    norms = np.full(len(loaded.tile_ids), np.nan, dtype=np.float32)
    for raw, batch in table.query().columns().to_numpy_batches():
        at, known = lookup.find(batch.column("tile_id"))
        norms[at[known]] = loaded.space.lengths(raw[known])
    missing = int(np.isnan(norms).sum())
    if missing:
        raise StaleIndexError(
            f"index {loaded.manifest.name!r}: {missing} of its rows have no vector in "
            f"{loaded.manifest.table} v{loaded.manifest.table_version}; rebuild it with `embedstore index "
            f"{catalog.root} --backbone {loaded.manifest.backbone} --name {loaded.manifest.name}`"
        )
    return norms


def _read_only(catalog: Catalog) -> bool:
    try:
        catalog.require_writable()
    except ReadOnlyStoreError:
        return True
    return False


def _resolved_config(options: IndexOptions, config: IndexConfig | None, rows: int, dim: int) -> IndexConfig:
    chosen = config or config_for(options.kind, options.backend, rows)
    if isinstance(chosen, LanceConfig) != (options.backend == "lancedb"):
        raise EmbedstoreError(
            f"config {type(chosen).__name__} does not fit --backend {options.backend}; "
            "LanceConfig goes with lancedb, the others with faiss"
        )
    return chosen.resolved(rows, dim)


def _find(catalog: Catalog, table: str, name: str | None) -> Path | ObjectPath | None:
    root = index_root(catalog, table)
    names = sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}"))
    if name is not None:
        if name not in names:
            raise EmbedstoreError(
                f"no index {name!r} for {table}; indexes: {', '.join(names) or 'none'} "
                f"(build one with `embedstore index {catalog.root} --backbone ... --name {name}`)"
            )
        return root / name
    if not names:
        return None
    if len(names) == 1 or "auto" in names:
        return root / (names[0] if len(names) == 1 else "auto")
    raise EmbedstoreError(f"{table} has several indexes ({', '.join(names)}); choose one with --index NAME")


def _load(catalog: Catalog, directory: Path | ObjectPath, device: str, attempts: int = 2) -> LoadedIndex:
    """Read the manifest and the files it names (again, once, if another process replaced them meanwhile)."""
    manifest = IndexManifest.load(directory)
    config = config_from_dict(manifest.config)
    try:
        if isinstance(config, LanceConfig):
            backend: FaissIndex | LanceIndex = LanceIndex.load(
                directory / manifest.files["vectors"], config, manifest.metric, manifest.lance_version
            )
        else:
            backend = FaissIndex.load(directory / manifest.files["index"], config, device)
        ids_file = directory / manifest.files["ids"]
        ids_table = feather.read_table(io.BytesIO(ids_file.read_bytes()))
        ids = ids_table.column("tile_id")
    except (OSError, KeyError, RuntimeError, ValueError) as error:
        if attempts > 1:
            return _load(catalog, directory, device, attempts - 1)
        raise EmbedstoreError(
            f"index {manifest.name!r} at {directory} cannot be read ({str(error).splitlines()[0]}); "
            f"rebuild it with `embedstore index <store> --backbone {manifest.backbone} "
            f"--name {manifest.name}`"
        ) from None
    space = VectorSpace(manifest.metric, manifest.mean_vector())
    tile_ids = ids.to_numpy(zero_copy_only=False).astype(str)
    norms = (
        ids_table.column("norm").to_numpy().astype(np.float32) if "norm" in ids_table.column_names else None
    )
    if isinstance(backend, FaissIndex) and backend.codes_only:
        if "row_address" not in ids_table.column_names:
            raise EmbedstoreError(
                f"index {manifest.name!r} at {directory} lacks its row addresses; rebuild it with "
                f"`embedstore index <store> --backbone {manifest.backbone} --name {manifest.name}`"
            )
        addresses = ids_table.column("row_address").to_numpy()
        backend.read_exact_from(
            TableVectors(catalog, manifest.table, manifest.table_version, addresses, space)
        )
    return LoadedIndex(manifest, backend, space, tile_ids, directory, device, norms)


def _save(
    directory: Path | ObjectPath,
    manifest: IndexManifest,
    backend: FaissIndex | LanceIndex,
    ids: np.ndarray | pa.Array,
    token: str,
    norms: np.ndarray | None = None,
    addresses: np.ndarray | None = None,
) -> None:
    """Write the index files under new names, then the manifest (atomically), then drop old files. The
    ids file holds each position's tile id, its length before normalising (`norm`) and, for an index
    re-scored from the table, its row address (`row_address`)."""
    files = {"ids": f"ids-{token}.arrow"}
    buffer = io.BytesIO()
    columns = {"tile_id": ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())}
    if norms is not None:
        columns["norm"] = pa.array(np.asarray(norms, dtype=np.float32))
    if addresses is not None:
        columns["row_address"] = pa.array(np.asarray(addresses, dtype=np.uint64))
    manifest.norms = norms is not None
    feather.write_feather(pa.table(columns), buffer)
    (directory / files["ids"]).write_bytes(buffer.getvalue())
    if isinstance(backend, LanceIndex):
        if isinstance(directory, Path) and backend.name.startswith(BUILDING):  # local stores only
            backend.move_to(directory / f"vectors-{token}.lance")
        files["vectors"] = backend.name
        manifest.lance_version = backend.version
    else:
        files["index"] = f"index-{token}.faiss"
        manifest.index_bytes = backend.save(directory / files["index"])
        manifest.memory_bytes = backend.memory_bytes() + (0 if addresses is None else addresses.nbytes)
    manifest.files = files
    manifest.config = config_to_dict(backend.config)
    manifest.save(directory)
    _remove_unreferenced(directory, set(files.values()))


def _remove_unreferenced(directory: Path | ObjectPath, keep: set[str]) -> None:
    """Remove the index files of earlier saves that the manifest no longer names. Only in an index's own
    folder (<store>/indexes/<table>/<name>), and only files named as `_save` names them: nothing else
    there (or anywhere else) is ever removed."""
    indexes = directory.parent.parent
    if indexes.name != INDEX_DIR or not is_inside(directory, indexes):
        raise EmbedstoreError(f"refusing to clean {directory}: it is not an index folder inside a store")
    for path in directory.iterdir():
        if path.name in keep or not SAVED_FILE.fullmatch(path.name):
            continue
        if isinstance(path, ObjectPath) and path.age() < UNREFERENCED_GRACE:
            continue
        remove_inside(path, directory)


def _token(table_version: int) -> str:
    return f"v{table_version}-{uuid.uuid4().hex[:8]}"
