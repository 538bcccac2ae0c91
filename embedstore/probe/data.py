"""The probe's inputs from the store: which backbones, the task's labelled tiles, their groups, vectors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..catalog import Catalog
from ..embedding_tables import Provenance, table_name
from ..embeddings import EmbeddingQuery
from ..errors import EmbedstoreError
from ..schema import EMBEDDING_PREFIX, LABELS, TILES, task_predicate

DEFAULT_GROUP_KEYS = ("patient", "slide", "image")  # the coarsest one set for every tile wins


@dataclass
class TaskTiles:
    """The labelled tiles every chosen backbone has, sorted by tile id, with codes and groups."""

    task: str
    tile_ids: np.ndarray
    codes: np.ndarray  # 0..C-1
    classes: list[str]
    groups: np.ndarray
    group_by: str
    notes: list[str] = field(default_factory=list)


def resolve_backbones(catalog: Catalog, backbones: str | list[str] | tuple[str, ...]) -> list[str]:
    """Backbone keys: "all" (every embedding table), a comma-separated string or a list; each must have
    embeddings (else the `embed` command to run; an unknown key or layer is named as such)."""
    stored = {_key_of(catalog, name): name for name in catalog.embedding_table_names()}
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
    labels = catalog.read(LABELS, columns=["tile_id", "label"], filter=task_predicate(task)).to_pydict()
    found = {t: lab for t, lab in zip(labels["tile_id"], labels["label"], strict=True) if lab is not None}
    if not found:  # only the task column of other tasks' labels is read, and only to name them
        tasks = sorted({k for k in catalog.read(LABELS, columns=["task"]).column("task").to_pylist() if k})
        raise EmbedstoreError(
            f"unknown task {task!r}; tasks in this store: {', '.join(tasks) or 'none (import labels first)'}"
        )
    notes = []
    ids = set(found)
    for key in keys:
        embedded = _embedded_ids(catalog, key)
        have = ids & embedded
        if not have:
            raise EmbedstoreError(
                f"{key!r} has no embeddings of task {task!r}'s tiles; run `embedstore embed {catalog.root} "
                f"--backbone {key}`"
            )
        if len(have) < len(ids):
            notes.append(
                f"{key} lacks {len(ids) - len(have)} of the task's {len(ids)} tiles (run `embedstore embed` "
                "again); every backbone is probed on the tiles all of them have"
            )
        ids = have
    tile_ids = np.array(sorted(ids), dtype=object)
    names = [found[t] for t in tile_ids]
    classes = sorted(set(names))
    code = {name: i for i, name in enumerate(classes)}
    groups, column = _groups(catalog, tile_ids, group_by)
    if column == "tile":
        notes.append("no group column is set for every tile: each tile is its own group")
    return TaskTiles(task, tile_ids, np.array([code[n] for n in names]), classes, groups, column, notes)


def aligned_vectors(catalog: Catalog, key: str, tiles: TaskTiles) -> np.ndarray:
    """The backbone's vectors (view 0) in the order of `tiles.tile_ids`."""
    x, ids, _ = EmbeddingQuery.of(catalog, key).task(tiles.task).columns().to_numpy()
    position = {t: i for i, t in enumerate(ids.tolist())}
    return np.ascontiguousarray(x[[position[t] for t in tiles.tile_ids]], dtype=np.float32)


def _groups(catalog: Catalog, tile_ids: np.ndarray, group_by: str | None) -> tuple[np.ndarray, str]:
    from ..schema import GROUP_KEYS

    if group_by is not None and group_by not in (*GROUP_KEYS, "source_id", "tile"):
        raise EmbedstoreError(
            f"--group-by {group_by!r} is not a tile column; "
            f"use one of {', '.join((*GROUP_KEYS, 'source_id', 'tile'))}"
        )
    if group_by == "tile":
        return tile_ids.astype(str), "tile"
    columns = ["tile_id", "source_id", *GROUP_KEYS]
    table = catalog.read(TILES, columns=columns).to_pydict()
    wanted = set(tile_ids.tolist())
    rows = {t: i for i, t in enumerate(table["tile_id"]) if t in wanted}
    order = [rows[t] for t in tile_ids]
    candidates = [group_by] if group_by else list(DEFAULT_GROUP_KEYS)
    for column in candidates:
        values = [table[column][i] for i in order]
        if all(v is not None for v in values):
            return np.array(values, dtype=object).astype(str), column
        if group_by:
            missing = sum(v is None for v in values)
            raise EmbedstoreError(
                f"--group-by {group_by}: {missing} of the task's tiles have no {group_by}; "
                "choose another column (e.g. source_id)"
            )
    return tile_ids.astype(str), "tile"


def _embedded_ids(catalog: Catalog, key: str) -> set[str]:
    dataset = catalog.dataset(table_name(key))
    return set(dataset.to_table(columns=["tile_id"], filter="view = 0").column("tile_id").to_pylist())


def _key_of(catalog: Catalog, name: str) -> str:
    provenance = Provenance.from_metadata(catalog.dataset(name).schema.metadata)
    return provenance.backbone if provenance else name[len(EMBEDDING_PREFIX) :]
