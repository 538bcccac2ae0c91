"""`embedstore upgrade STORE`: bring a store written by an older embedstore to the current format."""

import click

from ..options import json_option, store_argument
from ..output import emit_json


@click.command("upgrade")
@store_argument
@json_option
def command(store: str, as_json: bool) -> None:
    """Upgrade STORE in place (one new version per table; old versions stay readable)."""
    from embedstore.maintenance.upgrade import upgrade

    done = upgrade(store)
    if as_json:
        emit_json({"done": done})
        return
    for line in done:
        click.echo(line)
