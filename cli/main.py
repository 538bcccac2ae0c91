"""Entry point of the `embedstore` command: the click group and the error handling every command shares."""

from __future__ import annotations

import importlib
import sys

import click

from embedstore.errors import EmbedstoreError

# Module names under cli.commands, in the order `embedstore --help` lists them.
COMMAND_MODULES = (
    "demo",
    "init",
    "ingest",
    "preview",
    "labels",
    "info",
    "versions",
    "compact",
    "backbones",
    "embed",
)


class EmbedstoreGroup(click.Group):
    """A click group that turns EmbedstoreError into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EmbedstoreError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)


@click.group(cls=EmbedstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embedstore")
def app() -> None:
    """embedstore: an embedding store and vector database for histology tiles."""


for _name in COMMAND_MODULES:
    app.add_command(importlib.import_module(f"cli.commands.{_name}").command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
