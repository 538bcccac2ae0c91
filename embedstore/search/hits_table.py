"""The hits as `embedstore search` prints them: a table with headers, one tile a line.

    rank   score  file / tile       slide   position  label (tumour)
       1  0.8123  patch0000008.jpg  -       0,0       1

`file / tile` is the tile's image file name (tiles ingested from image files), else its tile id; `label` is
the tile's label for a task (`--label-task`, or the store's only task), `-` when it has none; a last
`tile_id` column follows when files are shown (the ids `--tile` and `--negative` take).
"""

from __future__ import annotations

from pathlib import PurePath

import polars as pl

from ..core.errors import EmbedstoreError
from ..core.schema import LABELS, sql_string, task_predicate
from ..core.text_table import aligned
from ..storage.catalog import Catalog

MAX_WIDTH = 40  # longer cells are shortened from the start ("…" + their end), which names the file
RIGHT = {"rank", "score"}


def shown_task(catalog: Catalog, asked: str | None) -> str | None:
    """The task whose labels the table shows: `asked` (checked), else the store's only task, else None."""
    tasks = sorted(set(catalog.read(LABELS, columns=["task"]).column("task").to_pylist()))
    if asked is None:
        return tasks[0] if len(tasks) == 1 else None
    if asked not in tasks:
        raise EmbedstoreError(
            f"--label-task {asked!r}: no tile is labelled for that task; "
            f"tasks: {', '.join(tasks) or 'none yet'}"
        )
    return asked


def hits_rows(hits: pl.DataFrame, catalog: Catalog, task: str | None) -> pl.DataFrame:
    """rank, score, file / tile, slide, position, (with a task) the label and (when files are shown) the
    tile id, as text cells."""
    ids = hits["tile_id"].to_list()
    images = hits["image"].to_list() if "image" in hits.columns else [None] * len(ids)
    xs, ys = hits["x"].to_list(), hits["y"].to_list()
    slides = hits["slide"].to_list() if "slide" in hits.columns else [None] * len(ids)
    columns = {
        "rank": [str(r) for r in hits["rank"].to_list()],
        "score": [f"{s:.4f}" for s in hits["score"].to_list()],
        "file / tile": [PurePath(i).name if i else t for i, t in zip(images, ids, strict=True)],
        "slide": [s or "-" for s in slides],
        "position": ["-" if x is None or y is None else f"{x},{y}" for x, y in zip(xs, ys, strict=True)],
    }
    if task is not None:
        labels = _labels(catalog, task, ids)
        columns[f"label ({task})"] = [labels.get(t, "-") for t in ids]
    if any(images):  # the ids `--tile` takes, when the files took their place
        columns["tile_id"] = ids
    return pl.DataFrame(columns)


def format_table(rows: pl.DataFrame) -> list[str]:
    """Lines of a plain-text table: a header, then one line per row; columns as wide as their cells."""
    cells = [[str(value) for value in row] for row in rows.iter_rows()]
    return aligned(rows.columns, cells, right=RIGHT, max_width=MAX_WIDTH)


def _labels(catalog: Catalog, task: str, tile_ids: list[str]) -> dict[str, str]:
    if not tile_ids:
        return {}
    predicate = f"{task_predicate(task)} AND tile_id IN ({', '.join(sql_string(t) for t in tile_ids)})"
    table = catalog.read(LABELS, columns=["tile_id", "label"], filter=predicate)
    return {row["tile_id"]: str(row["label"]) for row in table.to_pylist()}
