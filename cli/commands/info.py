"""`embedstore info STORE`: what a store holds."""

import json

import click

from embedstore.maintenance.info import format_info

from ..options import json_option, open_existing, store_argument


@click.command("info")
@store_argument
@json_option
def command(store: str, as_json: bool) -> None:
    """Sources, tiles, tasks with label counts, tables, saved indexes and heads (the table versions they
    are bound to; current or behind) and disk size of STORE."""
    info = open_existing(store).info()
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))
