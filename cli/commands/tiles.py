"""`embedstore tiles STORE [--task T] [--where SQL] [--columns A,B] [--limit N] [--csv|--json FILE]`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from embedstore import TileListOptions

from ..options import OUTPUT_FILE, from_options, open_existing, store_argument

if TYPE_CHECKING:
    import polars as pl

SHOWN_ROWS = 20  # rows the terminal table shows when no --limit is given
WIDTH = 40  # a longer file (or other text but the tile id) is shown by its end: "…/folder/name.png"


@click.command("tiles")
@store_argument
@click.option(
    "--task",
    "tasks",
    multiple=True,
    metavar="T",
    help=TileListOptions.__dataclass_fields__["task"].metadata["help"],
)
@from_options(TileListOptions)
@click.option(
    "--csv",
    "csv_file",
    type=OUTPUT_FILE,
    help="Write the tiles as CSV (one --task: `labels import` reads it).",
)
@click.option("--json", "json_file", type=OUTPUT_FILE, help="Write the tiles as JSON (a list of rows).")
def command(
    store: str, tasks: tuple[str, ...], csv_file: Path | None, json_file: Path | None, **options
) -> None:
    """List the tiles of STORE with their file, slide, position (x, y, level, size0), groups and labels.

    One --task gives a `label` column (and keeps the tiles labelled for it); several give label_<task>
    columns. Rows are sorted by file, then y, x. The terminal shows the first 20 rows unless --limit is
    given; --csv and --json write every row listed. Tile ids work with `search --tile`.
    """
    listing_options = TileListOptions(task=tasks, **options)
    limit = listing_options.limit  # applied here, so that the table can say "N of M tiles"
    frame = open_existing(store).tiles(options=dataclasses.replace(listing_options, limit=None))
    total = frame.height
    if limit is not None:
        frame = frame.head(limit)
    if csv_file is None and json_file is None:
        _print_table(
            frame.head(SHOWN_ROWS) if limit is None else frame, total, explicit=listing_options.columns
        )
        return
    if csv_file is not None:
        frame.write_csv(csv_file)
        click.echo(f"wrote {_count(frame.height, total)} to {csv_file}")
    if json_file is not None:
        json_file.write_text(json.dumps(frame.to_dicts(), indent=1, default=str) + "\n")
        click.echo(f"wrote {_count(frame.height, total)} to {json_file}")


def _count(shown: int, total: int) -> str:
    return f"{shown} of {total} tiles" if shown < total else f"{total} tile{'s' * (total != 1)}"


def _print_table(frame: pl.DataFrame, total: int, explicit: tuple[str, ...] | None) -> None:
    """Aligned columns with a header; tile columns empty in every shown row are left out unless asked for
    (label columns always stay: an empty one says the shown tiles have no label for that task)."""
    if total == 0:
        click.echo("no tiles (check --where and --task; `embedstore info` lists the tasks)")
        return
    kept = [c for c in frame.columns if _shown(c, frame, explicit)]
    cells = [[_cell(column, value) for value in frame[column].to_list()] for column in kept]
    widths = [
        max([len(column), *(len(cell) for cell in column_cells)])
        for column, column_cells in zip(kept, cells, strict=True)
    ]
    numeric = {c for c in kept if frame.schema[c].is_numeric()}
    rows = [kept, *zip(*cells, strict=True)]
    for row in rows:
        parts = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, cell, width in zip(kept, row, widths, strict=True)
        ]
        click.echo("  ".join(parts).rstrip())
    line = _count(frame.height, total)
    if frame.height < total:
        line += " (--limit N to list more, --csv FILE to write them all)"
    click.echo(line)


def _shown(column: str, frame: pl.DataFrame, explicit: tuple[str, ...] | None) -> bool:
    always = column == "tile_id" or column.startswith("label") or column in (explicit or ())
    return always or frame[column].null_count() < frame.height


def _cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    text = str(value)
    if column != "tile_id" and len(text) > WIDTH:
        tail = text[-(WIDTH - 1) :]
        cut = tail.find("/")  # start at a folder when one ends inside the tail
        return "…" + (tail[cut:] if 0 <= cut < len(tail) - 1 else tail)
    return text
