"""`embedstore check STORE [--repair] [--json]`: verify a store like a filesystem check."""

import sys

import click

from ..options import json_option, open_existing, store_argument
from ..output import emit


@click.command("check")
@store_argument
@click.option(
    "--repair",
    is_flag=True,
    help="Remove duplicate keys and orphans, one new version per table (undo: `versions --restore`).",
)
@json_option
def command(store: str, repair: bool, as_json: bool) -> None:
    """Check STORE: one row per key, no orphans, provenance that fits, complete sources; list failed
    sources. Exit code 0 when the store is fine, 1 when problems remain. Run --repair while no other
    process writes to the store."""
    opened = open_existing(store)
    report = opened.repair() if repair else opened.check()
    emit(report, as_json)
    if not report.ok:
        sys.exit(1)
