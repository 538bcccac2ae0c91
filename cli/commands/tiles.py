"""`embedstore tiles STORE [--task T] [--where SQL] [--columns A,B] [--limit N] [--csv|--json FILE]`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from embedstore import TileListOptions
from embedstore.maintenance.tile_listing import SHOWN_ROWS, count_line, tile_table

from ..options import OUTPUT_FILE, from_options, open_existing, store_argument


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
        shown = frame.head(SHOWN_ROWS) if limit is None else frame
        click.echo("\n".join(tile_table(shown, total, explicit=listing_options.columns)))
        return
    if csv_file is not None:
        frame.write_csv(csv_file)
        click.echo(f"wrote {count_line(frame.height, total)} to {csv_file}")
    if json_file is not None:
        json_file.write_text(json.dumps(frame.to_dicts(), indent=1, default=str) + "\n")
        click.echo(f"wrote {count_line(frame.height, total)} to {json_file}")
