"""Listing tiles with their file, slide, position, groups and labels, as a polars frame.

    store.tiles()                                      # every tile, with the label of every task
    store.tiles("tumour", where="split = 'valid'")     # tiles labelled for tumour: a `label` column
    store.tiles(["tumour", "grade"], columns="file,label_tumour,label_grade", limit=20)

`file` is the uri of the tile's source (byte-identical copies share one source: the first one ingested).
Rows are sorted by file, then y, x (reading order on a slide). The label columns: with one task, `label`
(so the frame written as CSV is what `labels import` reads); with several, `label_<task>` each. Given
tasks keep only the tiles labelled for at least one of them; without, every tile is listed. Reads the
store's tables through its catalog (tiles, sources, labels), never pixels or vectors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from ..core.errors import EmbedstoreError
from ..core.schema import GROUP_KEYS, LABELS, SOURCES, TILES, sql_string
from ..core.text_table import aligned
from ..core.validation import (
    Interval,
    Names,
    SqlExpression,
    invalid,
    option,
    options_from,
    validate,
)
from ..embeddings.query import tile_filter
from ..storage.catalog import Catalog

# Columns of the tiles table (all but the pixels), with `file` (the source's uri) after the tile id.
TILE_COLUMNS = (
    "tile_id",
    "file",
    "source_id",
    "x",
    "y",
    "level",
    "size0",
    "width",
    "height",
    "mpp",
    "tissue_fraction",
    *GROUP_KEYS,
)
# Listed when --columns is not given (labels follow).
DEFAULT_COLUMNS = ("tile_id", "file", "slide", "x", "y", "level", "size0", *GROUP_KEYS[1:])


@dataclass
class TileListOptions:
    """What `embedstore tiles` can be told (the columns are checked against the store's when listing)."""

    task: tuple[str, ...] = option(
        (),
        Names(),
        cli=False,  # the command's --task is repeatable
        help="A task whose labels to show (repeatable); keeps the tiles labelled for one of them "
        "[default: every task's labels, every tile].",
    )
    where: str | None = option(
        None,
        SqlExpression(),
        optional=True,
        help="One SQL expression over tile columns, e.g. \"slide = 'S1' AND x > 1000\".",
    )
    columns: tuple[str, ...] | None = option(
        None,
        Names(empty=False),
        optional=True,
        metavar="A,B,...",
        help="Columns to list, comma-separated (tile_id always comes first) [default: file, slide, "
        "position, groups, labels].",
    )
    limit: int | None = option(None, Interval(1, integer=True), optional=True, help="List at most N tiles.")

    def __post_init__(self) -> None:
        validate(self)


def list_tiles(catalog: Catalog, options: TileListOptions | None = None, **kwargs: Any) -> pl.DataFrame:
    """The tiles passing `where` (labelled for one of `task`, when given), with their labels, sorted by
    file, y, x; at most `limit` rows; the `columns` asked for (tile_id first)."""
    options = options_from(TileListOptions, options, kwargs)
    tasks = _tasks(catalog, options.task)
    label_names = label_columns(tasks)
    columns = _chosen(options.columns, label_names)
    predicate = tile_filter(catalog, options.where) if options.where is not None else None
    tiles = _tiles(catalog, predicate)
    labels = _labels(catalog, label_names)
    if label_names:  # given tasks keep only their labelled tiles
        frame = tiles.join(labels, on="tile_id", how="inner" if options.task else "left")
    else:
        frame = tiles
    frame = frame.sort(["file", "y", "x", "tile_id"], nulls_last=True)
    if options.limit is not None:
        frame = frame.head(options.limit)
    return frame.select(columns)


SHOWN_ROWS = 20  # rows the terminal table shows when no limit is given
CELL_WIDTH = 40  # a longer file (or other text but the tile id) is shown by its end: "…/folder/name.png"


def count_line(shown: int, total: int) -> str:
    """ "N of M tiles", or "M tiles" when all are shown."""
    return f"{shown} of {total} tiles" if shown < total else f"{total} tile{'s' * (total != 1)}"


def tile_table(frame: pl.DataFrame, total: int, explicit: tuple[str, ...] | None = None) -> list[str]:
    """The listing as `embedstore tiles` prints it: aligned columns with a header, then "N of M tiles".
    Tile columns empty in every shown row are left out unless `explicit`ly asked for (label columns always
    stay: an empty one says the shown tiles have no label for that task)."""
    if total == 0:
        return ["no tiles (check --where and --task; `embedstore info` lists the tasks)"]
    kept = [
        c
        for c in frame.columns
        if c == "tile_id"
        or c.startswith("label")
        or c in (explicit or ())
        or frame[c].null_count() < frame.height
    ]
    rows = [[_cell(value) for value in row] for row in frame.select(kept).iter_rows()]
    numeric = {c for c in kept if frame.schema[c].is_numeric()}
    lines = aligned(kept, rows, right=numeric, max_width=CELL_WIDTH, keep_whole={"tile_id"})
    last = count_line(frame.height, total)
    if frame.height < total:
        last += " (--limit N to list more, --csv FILE to write them all)"
    return [*lines, last]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def label_columns(tasks: Iterable[str]) -> dict[str, str]:
    """task -> its label column: `label` for one task, `label_<task>` for each of several."""
    tasks = list(tasks)
    if len(tasks) == 1:
        return {tasks[0]: "label"}
    return {task: f"label_{task}" for task in tasks}


def _tasks(catalog: Catalog, asked: tuple[str, ...]) -> list[str]:
    """The tasks asked for (each must have labels), or every task of the store."""
    known = sorted(set(catalog.read(LABELS, columns=["task"]).column("task").to_pylist()))
    missing = [task for task in asked if task not in known]
    if missing:
        raise EmbedstoreError(
            f"--task {missing[0]!r}: no labels for this task; tasks: {', '.join(known) or 'none'} "
            "(import labels with `embedstore labels import`)"
        )
    return list(asked) if asked else known


def _chosen(asked: tuple[str, ...] | None, label_names: dict[str, str]) -> list[str]:
    """The columns to return: tile_id, then those asked for (default: DEFAULT_COLUMNS and the labels)."""
    available = [*TILE_COLUMNS, *label_names.values()]
    if asked is None:
        return [*DEFAULT_COLUMNS, *label_names.values()]
    unknown = [name for name in asked if name not in available]
    if unknown:
        raise invalid("--columns", unknown[0], "a column of the listing: " + ", ".join(available))
    return ["tile_id", *(name for name in asked if name != "tile_id")]


def _tiles(catalog: Catalog, predicate: str | None) -> pl.DataFrame:
    """The tiles passing `predicate` (no pixels), with `file`: the uri of their source."""
    names = [name for name in TILE_COLUMNS if name != "file"]
    tiles = pl.from_arrow(catalog.read(TILES, columns=names, filter=predicate))
    sources = pl.from_arrow(catalog.read(SOURCES, columns=["source_id", "uri"]))
    assert isinstance(tiles, pl.DataFrame) and isinstance(sources, pl.DataFrame)
    files = sources.rename({"uri": "file"}).unique("source_id", keep="first")
    return tiles.join(files, on="source_id", how="left").select(TILE_COLUMNS)


def _labels(catalog: Catalog, label_names: dict[str, str]) -> pl.DataFrame:
    """tile_id and one label column per task (null where a tile has no label for it)."""
    frame = pl.DataFrame(schema={"tile_id": pl.String})
    if not label_names:
        return frame
    wanted = " OR ".join(f"task = {sql_string(task)}" for task in label_names)
    read = pl.from_arrow(catalog.read(LABELS, columns=["task", "tile_id", "label"], filter=wanted))
    assert isinstance(read, pl.DataFrame)
    for task, column in label_names.items():
        one = read.filter(pl.col("task") == task).select("tile_id", pl.col("label").alias(column))
        frame = frame.join(one, on="tile_id", how="full", coalesce=True)
    return frame
