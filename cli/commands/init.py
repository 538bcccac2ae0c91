"""`embedstore init STORE`: create an empty store."""

import click

from ..options import store_argument


@click.command("init")
@store_argument
def command(store: str) -> None:
    """Create an empty store (a directory) at STORE."""
    from embedstore import init

    created = init(store)
    click.echo(f"created store {created.root}")
