"""`embedstore labels import STORE --task NAME FILE`: labels for existing tiles."""

import click

from embedstore import LabelImportOptions

from ..options import from_options, json_option, open_existing, store_argument
from ..output import emit


@click.group("labels")
def command() -> None:
    """Manage labels of tiles (many tasks share the same tiles)."""


@command.command("import")
@store_argument
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--task", required=True, help="Task name the labels belong to, e.g. tumour.")
@from_options(LabelImportOptions)
@json_option
def import_command(store: str, file: str, task: str, as_json: bool, **options) -> None:
    """Import labels from FILE: CSV/Parquet with tile_id,label or source,x,y,label columns.

    Labels are kept exactly as written (007 stays 007). Rows with an empty label are refused unless
    --skip-empty-labels; rows giving one tile different labels are settled by --on-label-conflict.
    """
    report = open_existing(store).import_labels(task, file, LabelImportOptions(**options))
    emit(report, as_json)
