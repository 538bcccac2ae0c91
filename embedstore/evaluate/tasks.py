"""The probe's inputs from the store: which backbones, the task's labelled tiles, their groups, vectors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.errors import EmbedstoreError
from ..core.ids import IdLookup, id_bytes, id_strings
from ..core.schema import LABELS, TILES, task_predicate
from ..embeddings import EmbeddingQuery, EmbeddingTable
from ..storage.catalog import Catalog
from ..storage.embedding_tables import table_name

DEFAULT_GROUP_KEYS = ("patient", "slide", "image")  # the coarsest one set for every tile wins


@dataclass
class TaskTiles:
    """The labelled tiles every chosen backbone has, sorted by tile id, with codes and groups.

    Per-tile fields are numpy arrays (no Python object per tile): `keys` holds the tile ids as UTF-8
    bytes ("S", sorted and unique, searchable with np.searchsorted); `tile_ids` gives them as str."""

    task: str
    keys: np.ndarray  # tile ids as UTF-8 bytes ("S"), sorted, unique
    codes: np.ndarray  # int64, 0..C-1
    classes: list[str]
    groups: np.ndarray  # str ("U"), each tile's group
    group_by: str
    notes: list[str] = field(default_factory=list)

    @property
    def tile_ids(self) -> np.ndarray:
        """The tile ids as a numpy str array ("U"), sorted."""
        return id_strings(self.keys)


def resolve_backbones(catalog: Catalog, backbones: str | list[str] | tuple[str, ...]) -> list[str]:
    """Backbone keys: "all" (every embedding table), a comma-separated string or a list; each must have
    embeddings (else the `embed` command to run; an unknown key or layer is named as such)."""
    stored = {EmbeddingTable.of(catalog, name).backbone: name for name in catalog.embedding_table_names()}
    if backbones == "all" or backbones == ["all"] or backbones == ("all",):
        if not stored:
            raise EmbedstoreError(
                f"{catalog.root} has no embeddings yet; run `embedstore embed {catalog.root} --backbone KEY`"
            )
        return sorted(stored)
    keys = [k.strip() for k in backbones.split(",")] if isinstance(backbones, str) else list(backbones)
    keys = [k for k in dict.fromkeys(keys) if k]
    if not keys:
        raise EmbedstoreError("--backbones is empty; give keys separated by commas, or all")
    for key in keys:
        if not catalog.has_table(table_name(key)):
            from ..backbones import get_backbone

            get_backbone(key)  # an unknown backbone or layer fails here, naming what exists
            raise EmbedstoreError(
                f"no embeddings for {key!r} in {catalog.root}; run `embedstore embed {catalog.root} "
                f"--backbone {key}`"
            )
    return keys


def task_tiles(catalog: Catalog, task: str, keys: list[str], group_by: str | None) -> TaskTiles:
    """The task's labelled tiles embedded by every backbone in `keys`, with their group column."""
    labels = catalog.read(LABELS, columns=["tile_id", "label"], filter=task_predicate(task))
    labels = labels.filter(pc.is_valid(labels.column("label")))
    if labels.num_rows == 0:  # only the task column of other tasks' labels is read, and only to name them
        tasks = sorted({k for k in catalog.read(LABELS, columns=["task"]).column("task").to_pylist() if k})
        raise EmbedstoreError(
            f"unknown task {task!r}; tasks in this store: {', '.join(tasks) or 'none (import labels first)'}"
        )
    ids, label_index, label_names = _labels_by_tile(labels)
    del labels
    notes = []
    have = np.ones(len(ids), bool)
    for key in keys:
        embedded = have & _embedded(catalog, key, ids)
        count, total = int(embedded.sum()), int(have.sum())
        if not count:
            raise EmbedstoreError(
                f"{key!r} has no embeddings of task {task!r}'s tiles; run `embedstore embed {catalog.root} "
                f"--backbone {key}`"
            )
        if count < total:
            notes.append(
                f"{key} lacks {total - count} of the task's {total} tiles (run `embedstore embed` "
                "again); every backbone is probed on the tiles all of them have"
            )
        have = embedded
    if not have.all():
        ids, label_index = ids[have], label_index[have]
    present = np.unique(label_index)
    classes = sorted(label_names[i] for i in present.tolist())
    code = np.full(len(label_names), -1, np.int64)
    code[present] = [classes.index(label_names[i]) for i in present.tolist()]
    groups, column = _groups(catalog, ids, group_by)
    if column == "tile":
        notes.append("no group column is set for every tile: each tile is its own group")
    return TaskTiles(task, ids, code[label_index], classes, groups, column, notes)


def aligned_vectors(catalog: Catalog, key: str, tiles: TaskTiles) -> np.ndarray:
    """The backbone's vectors (view 0) in the order of `tiles.tile_ids`."""
    x, ids, _ = EmbeddingQuery.of(catalog, key).task(tiles.task).columns().to_numpy()
    rows, found = IdLookup(ids).find(tiles.keys, last=True)  # a repeated id: its last row
    if not found.all():
        raise KeyError(id_strings(tiles.keys[~found][:1])[0])
    return np.ascontiguousarray(x[rows], dtype=np.float32)


def _labels_by_tile(labels: pa.Table) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(tile ids as sorted unique bytes, each one's label as a position in the names, the label names):
    a tile labelled twice keeps its last label."""
    column = labels.column("label")
    names = pc.unique(column)
    index = pc.index_in(column, value_set=names).to_numpy().astype(np.int64)
    raw = id_bytes(labels.column("tile_id"))
    order = np.argsort(raw, kind="stable")
    raw, index = raw[order], index[order]
    last = np.ones(len(raw), bool)
    last[:-1] = raw[1:] != raw[:-1]
    return raw[last], index[last], names.to_pylist()


def _groups(catalog: Catalog, ids: np.ndarray, group_by: str | None) -> tuple[np.ndarray, str]:
    from ..core.schema import GROUP_KEYS

    if group_by is not None and group_by not in (*GROUP_KEYS, "source_id", "tile"):
        raise EmbedstoreError(
            f"--group-by {group_by!r} is not a tile column; "
            f"use one of {', '.join((*GROUP_KEYS, 'source_id', 'tile'))}"
        )
    if group_by == "tile":
        return id_strings(ids), "tile"
    candidates = [group_by] if group_by else list(DEFAULT_GROUP_KEYS)
    table = catalog.read(TILES, columns=["tile_id", *candidates])
    at, found = IdLookup.from_sorted(ids).find(table.column("tile_id"))
    rows = np.full(len(ids), -1, np.int64)  # the tiles table's row of each tile (-1: none)
    rows[at[found]] = np.flatnonzero(found)
    unknown = rows < 0
    taken = pa.array(rows.clip(min=0))
    for column in candidates:
        values = table.column(column).take(taken)
        missing = pc.is_null(values).to_numpy(zero_copy_only=False) | unknown
        if not missing.any():
            return _as_str(values), column
        if group_by:
            raise EmbedstoreError(
                f"--group-by {group_by}: {int(missing.sum())} of the task's tiles have no {group_by}; "
                "choose another column (e.g. source_id)"
            )
    return id_strings(ids), "tile"


def _as_str(values: pa.ChunkedArray) -> np.ndarray:
    """A column's values as a numpy str array ("U"): one Python object per distinct value, not per row."""
    distinct = pc.unique(values)
    index = pc.index_in(values, value_set=distinct).to_numpy()
    return np.array(distinct.to_pylist(), dtype=object).astype(str)[index]


def _embedded(catalog: Catalog, key: str, ids: np.ndarray) -> np.ndarray:
    """Whether the backbone embedded (view 0) each of the sorted `ids`."""
    return IdLookup(EmbeddingTable.of(catalog, key).tile_ids(views=(0,))).contains(ids)
