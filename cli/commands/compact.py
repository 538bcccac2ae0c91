"""`embedstore compact STORE`: merge fragments and drop old, untagged versions."""

import click

from ..options import json_option, open_existing, store_argument
from ..output import emit_json


@click.command("compact")
@store_argument
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Remove untagged versions older than this (e.g. 7d, 12h, 0s). Tagged versions are kept.",
)
@json_option
def command(store: str, older_than: str, as_json: bool) -> None:
    """Compact STORE's tables and remove old versions (tagged versions are never removed)."""
    report = open_existing(store).compact(older_than)
    if as_json:
        emit_json(report)
        return
    for name, stats in report.items():
        click.echo(
            f"{name}: {stats['versions_before']} -> {stats['versions_after']} version(s), "
            f"{stats['bytes_removed'] / 2**20:.1f} MiB freed"
        )
