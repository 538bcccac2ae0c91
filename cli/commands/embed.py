"""`embedstore embed STORE --backbone KEY ...`: embed the tiles not yet embedded, per backbone."""

from pathlib import Path

import click

from embedstore.augment import AUGMENTATIONS
from embedstore.embed import EmbedOptions, check_backbones, embed
from embedstore.embedding_tables import PRECISIONS, STORE_DTYPES
from embedstore.errors import EmbedstoreError
from embedstore.inference import DEVICES

from ..options import open_existing, store_argument


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
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="Local weights file or timm model directory for the (single) backbone.",
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(list(PRECISIONS)),
    help="Autocast precision [default: the table's, else fp32].",
)
@click.option(
    "--compile", "compile_", is_flag=True, help="torch.compile the model (slow start, faster after)."
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option(
    "--store-dtype",
    type=click.Choice(list(STORE_DTYPES)),
    help="Stored vector type [default: the table's, else float32].",
)
@click.option(
    "--views", type=int, default=0, show_default=True, help="Augmented views per tile besides the tile."
)
@click.option(
    "--augment",
    default=",".join(AUGMENTATIONS),
    show_default=True,
    help="Augmentations of the views, comma-separated.",
)
@click.option(
    "--workers",
    type=int,
    help="Decode processes; 0 decodes between batches [default: 0 on CPUs of up to 4 cores, "
    "1 per 8 cores above, up to 8 with a GPU].",
)
@click.option("--threads", type=int, help="torch threads for the forward pass [default: torch's].")
@click.option("--limit", type=int, help="Embed at most this many tiles.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(
    store: str, backbones: tuple[str, ...], weights: Path | None, compile_: bool, no_progress: bool, **options
) -> None:
    """Embed STORE's tiles with each --backbone into emb__<key> (only tiles not embedded yet)."""
    if weights is not None and len(backbones) > 1:
        raise EmbedstoreError("--weights applies to one --backbone; run one command per weights file")
    opened = open_existing(store)
    check_backbones(backbones, weights)
    for key in backbones:
        report = embed(
            opened, key, EmbedOptions(weights=weights, compile=compile_, progress=not no_progress, **options)
        )
        click.echo(report.summary())
