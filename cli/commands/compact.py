"""`embedstore compact STORE`: merge fragments and drop old, untagged versions."""

import click

from ..options import json_option, open_existing, store_argument
from ..output import emit


@click.command("compact")
@store_argument
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Remove untagged versions older than this (e.g. 7d, 12h, 0s). Tagged versions are kept. "
    "Fragments are merged only when that frees space (no younger or tagged version still reads them).",
)
@json_option
def command(store: str, older_than: str, as_json: bool) -> None:
    """Remove STORE's old untagged versions and merge fragments where that frees space; prints versions
    and bytes on disk before and after, per table."""
    emit(open_existing(store).compact(older_than), as_json)
