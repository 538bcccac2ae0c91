"""`embedstore embed STORE --backbone KEY [--where SQL]`: embed the tiles not yet embedded, per backbone."""

import click

from embedstore.core.errors import EmbedstoreError
from embedstore.embed import EmbedOptions

from ..options import from_options, json_option, open_existing, store_argument
from ..output import emit_json


@click.command("embed")
@store_argument
@click.option(
    "--backbone",
    "backbones",
    multiple=True,
    required=True,
    metavar="KEY",
    help="Backbone key (see `embedstore backbones`); repeat for several.",
)
@from_options(EmbedOptions)
@json_option
def command(store: str, backbones: tuple[str, ...], as_json: bool, **options) -> None:
    """Embed STORE's tiles with each --backbone into emb__<key> (only tiles not embedded yet; with
    --where, only those of them the expression matches).

    Several runs of the same backbone at once (or with an ingest) end with one row per tile and view.
    """
    from embedstore.embed import check_backbones

    embed_options = EmbedOptions(**options)
    if embed_options.weights is not None and len(backbones) > 1:
        raise EmbedstoreError("--weights applies to one --backbone; run one command per weights file")
    opened = open_existing(store)
    check_backbones(backbones, embed_options.weights)
    reports = []
    for key in backbones:
        report = opened.embed(key, embed_options)
        reports.append(report)
        if not as_json:
            click.echo(report.summary())
    if as_json:
        emit_json([report.to_dict() for report in reports])
