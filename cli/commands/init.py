"""`embedstore init STORE`: create an empty store."""

import click

from embedstore import init

from ..options import store_argument


@click.command("init")
@store_argument
def command(store: str) -> None:
    """Create an empty store (a directory) at STORE."""
    created = init(store)
    click.echo(f"created store {created.root}")
