"""Training data for heads from the store: a group-aware split of a task's tiles, and batches streamed
from the backbone's table (never the whole table in memory).

    split = split_tiles(store, "tumour", backbone="uni", validation=0.2, seed=0)
    stream = BatchStream(store.embeddings("uni").columns(), split.train_codes(), batch_size=256)
    for x, y, tile_ids in stream.epoch(0):       # float32 (b, d), int64 (b,), list of b tile ids
        ...

Only the labels, the tile ids and the group column are read whole (they are small, and held as numpy
arrays: `TileIds`, a set of ids as one sorted bytes array, and `TileCodes`, ids with their class codes,
never a Python object per tile); vectors come in
Arrow batches through `EmbeddingQuery.to_batches`, the rows of the wanted tiles are kept and shuffled
within a bounded buffer. With stored views, each tile gives one of its views per epoch, chosen by a hash
of (tile, epoch, seed), so every view is drawn across epochs and a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from embedstore.core.errors import EmbedstoreError
from embedstore.core.ids import IdLookup, id_keys
from embedstore.core.validation import Interval, check_value
from embedstore.embeddings import EmbeddingQuery, vectors
from embedstore.evaluate import group_folds, task_tiles
from embedstore.storage.catalog import Catalog, HasCatalog, catalog_of
from embedstore.storage.embedding_tables import table_name

from .errors import HeadsError

SHUFFLE_BUFFER = 16_384  # rows held to shuffle training batches
READ_BATCH = 2_048  # rows per Arrow batch read from the table (the scanner reads ahead several)
SAMPLE_ROWS = 20_000  # rows read to fit input scaling and augmentation statistics (80 MB at 1280-d)


# -- the split ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileSplit:
    """A task's labelled tiles split into train and validation, no group on both sides.

    Held as arrays: `codes` maps every tile id of the split to its class code (a Mapping over two numpy
    arrays), `train_ids` and `validation_ids` are sets of tile ids (one sorted bytes array each)."""

    task: str
    classes: list[str]  # class names; a tile's code is its class's position
    codes: TileCodes  # tile id -> class code, every tile of the split
    train_ids: TileIds
    validation_ids: TileIds
    group_by: str  # patient | slide | image | ... | tile
    notes: list[str] = field(default_factory=list)

    def train_codes(self) -> TileCodes:
        return self.codes.subset(self.train_ids)

    def validation_codes(self) -> TileCodes:
        return self.codes.subset(self.validation_ids)

    def class_counts(self, ids: Iterable[str] | None = None) -> dict[str, int]:
        """Tiles per class name among `ids` (default: the training tiles), from the labels alone."""
        chosen = self.train_ids if ids is None else ids if isinstance(ids, TileIds) else TileIds(ids)
        counts = np.bincount(self.codes.subset(chosen).codes, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts, strict=True)}


def split_tiles(
    store: Catalog | HasCatalog,
    task: str,
    backbone: str | None = None,
    group_by: str | None = None,
    validation: float = 0.2,
    seed: int = 0,
) -> TileSplit:
    """Split the task's labelled tiles (those `backbone` embedded, when given) into train and validation.

    Group-aware and stratified: the probe's `group_folds` with round(1 / validation) folds over the group
    column (patient > slide > image > tile, the probe's rule, unless `group_by`), one fold held out, the
    first whose both sides hold every class; each seed permutes the groups anew. HeadsError for an
    unknown task, one class, or groups too few to give both sides every class.
    """
    store = catalog_of(store)
    checked("--validation", validation, Interval(0, 0.5, open_low=True))
    checked("--seed", seed, Interval(0, integer=True))
    keys = []
    if backbone is not None:
        require_embeddings(store, backbone)
        keys = [backbone]
    try:
        tiles = task_tiles(store, task, keys, group_by)
    except HeadsError:
        raise
    except EmbedstoreError as error:  # unknown task, no embeddings of its tiles, bad --group-by
        raise HeadsError(str(error)) from None
    classes = np.unique(tiles.codes)
    if len(classes) < 2:
        only = tiles.classes[0] if tiles.classes else "none"
        raise HeadsError(
            f"task {task!r} has one class ({only}); a head needs at least two: import labels of another class"
        )
    groups = tiles.groups
    spread = {tiles.classes[c]: len(np.unique(groups[tiles.codes == c])) for c in classes}
    thin = [f"{name} ({n})" for name, n in spread.items() if n < 2]
    if thin:
        raise HeadsError(
            f"task {task!r}: class {', '.join(thin)} lies in one {tiles.group_by} group, so it cannot be "
            f"both trained on and validated; label tiles of other {tiles.group_by}s, or use --group-by tile"
        )
    n_groups = len(np.unique(groups))
    folds = min(max(2, round(1 / validation)), n_groups)
    notes = list(tiles.notes)
    chosen = None
    for split in group_folds(tiles.codes, groups, folds, seed):
        if (
            len(np.unique(tiles.codes[split.test]))
            == len(classes)
            == len(np.unique(tiles.codes[split.train]))
        ):
            chosen = split
            break
    if chosen is None:
        raise HeadsError(
            f"task {task!r}: no split of its {n_groups} {tiles.group_by} groups puts every class on both the "
            f"training and the validation side; label tiles of more {tiles.group_by}s, or use --group-by tile"
        )
    if folds != max(2, round(1 / validation)):
        notes.append(
            f"{n_groups} {tiles.group_by} groups: validating on one of {folds} folds "
            f"(about {1 / folds:.0%} of the tiles) instead of {validation:.0%}"
        )
    tile_keys = tiles.keys  # sorted and unique, so are its subsets at sorted positions
    return TileSplit(
        task=task,
        classes=list(tiles.classes),
        codes=TileCodes(TileIds.from_sorted(tile_keys), tiles.codes.astype(np.int64, copy=False)),
        train_ids=TileIds.from_sorted(tile_keys[chosen.train]),
        validation_ids=TileIds.from_sorted(tile_keys[chosen.test]),
        group_by=tiles.group_by,
        notes=notes,
    )


def require_embeddings(store: Catalog, backbone: str) -> str:
    """The backbone's table name; HeadsError naming the `embed` command when it has none."""
    name = table_name(backbone)
    if not store.has_table(name):
        raise HeadsError(
            f"no embeddings for {backbone!r} in {store.root}; run `embedstore embed {store.root} "
            f"--backbone {backbone}` first"
        )
    return name


def checked(flag: str, value, constraint):
    """embedstore's `check_value`, raising HeadsError (same one-line message)."""
    try:
        return check_value(flag, value, constraint)
    except EmbedstoreError as error:
        raise HeadsError(str(error)) from None


# -- tile ids as arrays -----------------------------------------------------------------------------------


class TileIds(IdLookup, Set):
    """A set of tile ids: embedstore's `IdLookup` over ids sorted and unique (one numpy bytes array, UTF-8,
    "S"; no Python object per id; O(batch log n) per Arrow batch). Iterating gives str; `|`, `&`, `-` give
    frozensets."""

    __slots__ = ()

    def __init__(self, ids: Iterable[str] | pa.Array | pa.ChunkedArray | np.ndarray = ()) -> None:
        """ids: an Arrow string array, a numpy bytes array, or any iterable of str (a dict gives its keys)."""
        if isinstance(ids, IdLookup):
            keys = ids.sorted
        elif isinstance(ids, np.ndarray | pa.Array | pa.ChunkedArray):
            keys = id_keys(ids)
        else:
            keys = id_keys(pa.array(list(ids), pa.string()))
        self.order, self.sorted = None, (np.unique(keys) if len(keys) else np.empty(0, "S1"))

    @classmethod
    def _from_iterable(cls, iterable):
        return frozenset(iterable)

    def __len__(self) -> int:
        return len(self.sorted)

    def __iter__(self) -> Iterator[str]:
        for key in self.sorted.tolist():
            yield key.decode()

    def __contains__(self, tile_id: object) -> bool:
        if not isinstance(tile_id, str) or len(self.sorted) == 0:
            return False
        return bool(self.lookup(np.array([tile_id.encode()]))[1][0])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TileIds):
            return len(self) == len(other) and bool((self.sorted == other.sorted).all())
        return Set.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TileIds({len(self)} tiles)"

    def lookup(self, ids: pa.Array | pa.ChunkedArray | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position of each id in the sorted set, whether it is in the set); ids: Arrow or numpy bytes."""
        return self.find(ids)


TileLookup = TileIds  # its former name: positions of tile ids in a fixed set


class TileCodes(Mapping):
    """Tile id -> class code, held as arrays: `ids` (a TileIds) and `codes` (int64, one per id in the
    order of `ids.sorted`). A Mapping[str, int], so a dict of codes can stand wherever one is taken."""

    __slots__ = ("ids", "codes")

    def __init__(self, ids: TileIds, codes: np.ndarray) -> None:
        if len(ids) != len(codes):
            raise ValueError(f"{len(ids)} tile ids and {len(codes)} codes differ")
        self.ids, self.codes = ids, np.asarray(codes, dtype=np.int64)

    @classmethod
    def of(cls, codes: Mapping[str, int]) -> TileCodes:
        """`codes` as TileCodes (itself when it is one already)."""
        if isinstance(codes, TileCodes):
            return codes
        keys = id_keys(pa.array(list(codes), pa.string())) if len(codes) else np.empty(0, "S1")
        values = np.fromiter(codes.values(), np.int64, len(codes))
        order = np.argsort(keys, kind="stable")
        return cls(TileIds.from_sorted(keys[order]), values[order])

    def subset(self, ids: TileIds) -> TileCodes:
        """The codes of `ids` (each must be here, else KeyError naming one that is not)."""
        at, found = self.ids.lookup(ids.sorted)
        if not found.all():
            raise KeyError(ids.sorted[~found][0].decode())
        return TileCodes(ids, self.codes[at])

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, tile_id: object) -> bool:
        return tile_id in self.ids

    def __getitem__(self, tile_id: str) -> int:
        if not isinstance(tile_id, str):
            raise KeyError(tile_id)
        at, found = self.ids.lookup(np.array([tile_id.encode()]))
        if not found[0]:
            raise KeyError(tile_id)
        return int(self.codes[at[0]])

    def keys(self) -> TileIds:  # type: ignore[override]
        return self.ids

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TileCodes):
            return self.ids == other.ids and bool((self.codes == other.codes).all())
        return Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TileCodes({len(self)} tiles)"


# -- streaming batches ------------------------------------------------------------------------------------


@dataclass
class StreamCounters:
    """What a stream read and held: for tests and the memory benchmark."""

    arrow_batches: int = 0  # RecordBatches read from the table
    rows_read: int = 0  # rows in them
    rows_kept: int = 0  # rows of wanted tiles (one view per tile)
    peak_rows: int = 0  # most rows held in the shuffle buffer at once
    batches: int = 0  # batches yielded


class BatchStream:
    """Batches (x float32, y int64 codes, tile ids) of the tiles in `codes`, streamed from `query`.

    query: the backbone's EmbeddingQuery (its `where`/`columns` apply; its views are set here).
    codes: tile id -> class code of the wanted tiles (TileCodes, or any mapping such as a dict).
    views: draw one stored view per tile and epoch (else view 0 only).
    shuffle: shuffle within a buffer of `shuffle_buffer` rows (validation and prediction read in order).
    Each call of `epoch(e)` reads the table once; `counters` accumulate over calls.
    """

    def __init__(
        self,
        query: EmbeddingQuery,
        codes: Mapping[str, int],
        batch_size: int = 256,
        *,
        shuffle: bool = True,
        shuffle_buffer: int = SHUFFLE_BUFFER,
        views: bool = False,
        seed: int = 0,
        read_batch: int = READ_BATCH,
    ) -> None:
        checked("--batch-size", batch_size, Interval(1, integer=True))
        checked("shuffle_buffer", shuffle_buffer, Interval(1, integer=True))
        self.query = query.all_views() if views else query.views(0)
        self.batch_size, self.shuffle, self.shuffle_buffer = batch_size, shuffle, shuffle_buffer
        self.views, self.seed, self.read_batch = views, seed, read_batch
        wanted = TileCodes.of(codes)
        self.index, self.codes = wanted.ids, wanted.codes  # codes in the order of index.sorted
        self.dim = query.embedding_table().dim
        self.counters = StreamCounters()
        self._view_table: _ViewTable | None = None

    def __len__(self) -> int:
        """Tiles (rows per epoch)."""
        return len(self.index)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """One pass over the table: every wanted tile once (one of its views, with `views`)."""
        rows = self._rows(epoch)
        if not self.shuffle:
            yield from self._in_order(rows)
            return
        yield from self._shuffled(rows, np.random.default_rng([self.seed, epoch]))

    # -- reading ------------------------------------------------------------------------------------------

    def _rows(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x, positions in the lookup) of the wanted rows of each Arrow batch, one view per tile."""
        chooser = self._views().chooser(epoch, self.seed) if self.views else None
        for batch in self.query.to_batches(self.read_batch):
            self.counters.arrow_batches += 1
            self.counters.rows_read += batch.num_rows
            at, found = self.index.lookup(batch.column("tile_id"))
            if chooser is not None:
                found &= chooser(at, batch.column("view").to_numpy().astype(np.int64))
            if not found.any():
                continue
            keep = np.flatnonzero(found)
            self.counters.rows_kept += len(keep)
            yield vectors(batch.column("vector"))[keep], at[keep]

    def _views(self) -> _ViewTable:
        if self._view_table is None:
            self._view_table = _ViewTable.read(self.query, self.index)
        return self._view_table

    # -- batching -----------------------------------------------------------------------------------------

    def _emit(self, x: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        self.counters.batches += 1
        ids = [t.decode() for t in self.index.sorted[positions].tolist()]
        return np.ascontiguousarray(x, dtype=np.float32), self.codes[positions], ids

    def _in_order(self, rows) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        for x, positions in rows:
            self.counters.peak_rows = max(self.counters.peak_rows, len(x))
            for start in range(0, len(x), self.batch_size):
                end = start + self.batch_size
                yield self._emit(x[start:end], positions[start:end])

    def _shuffled(self, rows, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, list[str]]]:
        """A shuffle buffer: rows go in by Arrow batch; while it holds `shuffle_buffer` rows or more, a
        batch of random rows comes out and the newest rows take their places. It holds at most
        shuffle_buffer - 1 + one Arrow batch of rows."""
        capacity = self.shuffle_buffer + self.read_batch
        bx = np.empty((capacity, self.dim), np.float32)
        bpos = np.empty(capacity, np.int64)
        n, b = 0, self.batch_size
        for x, positions in rows:
            k = len(x)
            if n + k > capacity:  # an Arrow batch larger than asked for: grow once
                capacity = n + k
                bx, bpos = _grown(bx, capacity), _grown(bpos, capacity)
            bx[n : n + k], bpos[n : n + k] = x, positions
            n += k
            self.counters.peak_rows = max(self.counters.peak_rows, n)
            while n >= max(self.shuffle_buffer, b):
                chosen = rng.choice(n, b, replace=False)
                yield self._emit(bx[chosen], bpos[chosen])
                _fill_holes(chosen, n, bx, bpos)
                n -= b
        if n == 0:
            return
        order = rng.permutation(n)
        for chunk in np.array_split(order, -(-n // b)):  # the rest in near-equal batches, none tiny
            yield self._emit(bx[chunk], bpos[chunk])


def _fill_holes(chosen: np.ndarray, n: int, *arrays: np.ndarray) -> None:
    """Move the rows among the last len(chosen) that were not chosen into the chosen places below."""
    end = n - len(chosen)
    holes = chosen[chosen < end]
    tail = np.setdiff1d(np.arange(end, n), chosen, assume_unique=True)
    for array in arrays:
        array[holes] = array[tail]


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    grown = np.empty((size, *array.shape[1:]), array.dtype)
    grown[: len(array)] = array
    return grown


class _ViewTable:
    """The stored views of each wanted tile (read once from the tile_id and view columns, no vectors)."""

    def __init__(self, starts: np.ndarray, counts: np.ndarray, views: np.ndarray, hashes: np.ndarray) -> None:
        self.starts, self.counts, self.views, self.hashes = starts, counts, views, hashes

    @classmethod
    def read(cls, query: EmbeddingQuery, index: TileIds) -> _ViewTable:
        positions, views = [], []
        for batch in query.embedding_table().to_batches(("tile_id", "view"), batch_size=8 * READ_BATCH):
            at, found = index.lookup(batch.column("tile_id"))
            positions.append(at[found])
            views.append(batch.column("view").to_numpy()[found].astype(np.int64))
        position = np.concatenate(positions) if positions else np.empty(0, np.int64)
        view = np.concatenate(views) if views else np.empty(0, np.int64)
        order = np.lexsort((view, position))
        counts = np.bincount(position, minlength=len(index))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return cls(starts, counts, view[order], _tile_hashes(index.sorted))

    def chooser(self, epoch: int, seed: int):
        """f(positions, views) -> whether each row is its tile's view for this epoch and seed."""
        salt = _splitmix(_splitmix(np.uint64(seed)) ^ np.uint64(epoch))
        pick = (_splitmix(self.hashes ^ salt) % np.maximum(self.counts, 1).astype(np.uint64)).astype(np.int64)
        chosen = np.full(len(self.counts), -1, np.int64)
        stored = self.counts > 0
        chosen[stored] = self.views[self.starts[stored] + pick[stored]]

        def keep(positions: np.ndarray, views: np.ndarray) -> np.ndarray:
            return chosen[positions] == views

        return keep


def _tile_hashes(keys: np.ndarray) -> np.ndarray:
    """A 64-bit FNV-1a hash of each tile id (vectorised over the bytes; stable across runs and versions)."""
    width = keys.dtype.itemsize
    raw = np.frombuffer(keys.tobytes(), np.uint8).reshape(len(keys), width) if len(keys) else np.empty((0, 0))
    h = np.full(len(keys), 0xCBF29CE484222325, np.uint64)
    with np.errstate(over="ignore"):
        for column in range(width):
            byte = raw[:, column].astype(np.uint64)
            live = byte != 0  # bytes strings are zero-padded to the width
            h = np.where(live, (h ^ byte) * np.uint64(0x100000001B3), h)
    return h


def _splitmix(value) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = np.asarray(value, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


# -- a bounded sample for augmentation statistics -----------------------------------------------------------


def augmentation_sample(
    query: EmbeddingQuery, codes: Mapping[str, int], classes: int, limit: int = SAMPLE_ROWS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y codes): at most `limit` training rows (view 0), drawn uniformly within each class; the
    budget goes to the smallest classes first, so minority classes come whole whenever they fit (what
    SMOTE needs) and the largest class gets the rest. One pass over the table into one preallocated
    array (a bottom-k reservoir per class on random keys): it holds the sample plus one Arrow batch."""
    codes = TileCodes.of(codes)
    counts = np.bincount(codes.codes, minlength=classes)
    quota = _quotas(counts, limit)
    offsets = np.concatenate([[0], np.cumsum(quota)])
    rng = np.random.default_rng([seed, 7])
    stream = BatchStream(query, codes, shuffle=False, batch_size=READ_BATCH)
    sample = np.empty((int(offsets[-1]), stream.dim), np.float32)
    keys = [np.full(int(q), np.inf) for q in quota]  # inf: an empty slot, evicted first
    for x, positions in stream._rows(0):
        y = stream.codes[positions]
        drawn = rng.random(len(x))
        for c in np.unique(y):
            mine = np.flatnonzero(y == c)
            _reservoir_add(keys[c], sample[offsets[c] : offsets[c + 1]], drawn[mine], x[mine])
    labels = np.repeat(np.arange(classes), quota)
    filled = np.isfinite(np.concatenate(keys)) if len(keys) else np.zeros(0, bool)
    if not filled.all():  # labelled training tiles without vectors left slots empty
        return sample[filled], labels[filled]
    return sample, labels


def _reservoir_add(keys: np.ndarray, slots: np.ndarray, new_keys: np.ndarray, new_x: np.ndarray) -> None:
    """Keep the rows with the smallest keys among `slots` and the new rows, in place."""
    size = len(keys)
    if size == 0:
        return
    joined = np.concatenate([keys, new_keys])
    keep = np.argpartition(joined, size - 1)[:size] if len(joined) > size else np.arange(len(joined))
    incoming = keep[keep >= size] - size
    free = np.setdiff1d(np.arange(size), keep[keep < size])[: len(incoming)]
    keys[free], slots[free] = new_keys[incoming], new_x[incoming]


def _quotas(counts: np.ndarray, limit: int) -> np.ndarray:
    quota = np.zeros(len(counts), np.int64)
    left = limit
    order = np.argsort(counts, kind="stable")
    for i, c in enumerate(order):
        share = left // (len(order) - i)
        quota[c] = min(int(counts[c]), share)
        left -= quota[c]
    return quota
