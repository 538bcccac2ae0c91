"""`embedstore config STORE`: show or change the store's settings."""

import click

from ..options import json_option, open_existing, store_argument
from ..output import emit


@click.command("config")
@store_argument
@click.option(
    "--version-retention",
    help="How long untagged table versions are kept (e.g. 7d, 12h, 0s): the automatic compaction after "
    "each embed and ingest run prunes older ones, never a tagged one nor one a saved index or head is "
    "bound to. [default: 7d]",
)
@json_option
def command(store: str, version_retention: str | None, as_json: bool) -> None:
    """Show STORE's settings; with an option, change it first."""
    opened = open_existing(store)
    emit(opened.settings() if version_retention is None else opened.configure(version_retention), as_json)
