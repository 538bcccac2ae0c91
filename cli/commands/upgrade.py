"""`embedstore upgrade STORE`: bring a store written by an older embedstore to the current format."""

import click

from ..options import store_argument


@click.command("upgrade")
@store_argument
def command(store: str) -> None:
    """Upgrade STORE in place (one new version per table; old versions stay readable)."""
    from embedstore.upgrade import upgrade

    for line in upgrade(store):
        click.echo(line)
