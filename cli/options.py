"""Option factories shared by several commands."""

from __future__ import annotations

import click

from embedstore import Store
from embedstore import open as open_store

store_argument = click.argument("store", type=click.Path(file_okay=False, path_type=str))
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def open_existing(path: str) -> Store:
    """The store at `path`; a one-line error (exit 2) when it is not one."""
    return open_store(path)
