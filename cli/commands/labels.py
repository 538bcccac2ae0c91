"""`embedstore labels import STORE --task NAME FILE`: labels for existing tiles."""

import click

from ..options import open_existing, store_argument


@click.group("labels")
def command() -> None:
    """Manage labels of tiles (many tasks share the same tiles)."""


@command.command("import")
@store_argument
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--task", required=True, help="Task name the labels belong to, e.g. tumour.")
def import_command(store: str, file: str, task: str) -> None:
    """Import labels from FILE: CSV/Parquet with tile_id,label or source,x,y,label columns."""
    written = open_existing(store).import_labels(task, file)
    click.echo(f"{written} label(s) written for task {task!r}")
