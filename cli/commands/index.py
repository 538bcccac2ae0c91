"""`embedstore index STORE --backbone KEY [--kind ...]`: build a similarity index; `--list` shows them."""

import click

from embedstore.search import IndexOptions

from ..options import from_options, json_option, open_existing, store_argument
from ..output import emit_json


@click.command("index")
@store_argument
@click.option("--backbone", metavar="KEY", help="Backbone whose vectors to index (see `embedstore info`).")
@from_options(IndexOptions)
@click.option("--list", "list_only", is_flag=True, help="List the store's indexes instead of building one.")
@json_option
def command(store: str, backbone: str | None, list_only: bool, as_json: bool, **options) -> None:
    """Build (or rebuild) an index over STORE's vectors of --backbone, saved inside the store.

    auto: exact below 100k vectors, else IVF-PQ with a refine step, tuned to recall@10 >= 0.95 on a sample
    of the table's own vectors. The index records the table version it matches; `search` adds rows
    embedded later, and refuses an index whose table lost rows.
    """
    opened = open_existing(store)
    if list_only:
        manifests = opened.indexes(backbone)
        if as_json:
            emit_json([m.to_dict() | {"mean": None} for m in manifests])
        else:
            click.echo("\n".join(m.summary() for m in manifests) or "no indexes")
        return
    if backbone is None:
        raise click.UsageError("--backbone KEY is required (or --list)")
    say = None if as_json else (lambda line: click.echo(line, err=True))
    manifest = opened.index(backbone, IndexOptions(**options), say=say)
    if as_json:
        emit_json(manifest.to_dict() | {"mean": None})
    else:
        click.echo(manifest.summary())
