"""`embedstore preview SLIDE --out FILE.png`: see the tissue mask and tile grid before ingesting."""

from pathlib import Path

import click

from embedstore.planning import GridSettings
from embedstore.preview import preview_slide


@click.command("preview")
@click.argument("slide", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default="preview.png", show_default=True
)
@click.option("--mpp", type=float, help="µm/px of the slide, overriding its metadata.")
@click.option("--target-mpp", type=float, default=0.5, show_default=True)
@click.option("--tile-size", type=int, default=224, show_default=True)
@click.option("--overlap", type=int, default=0, show_default=True)
@click.option("--min-tissue", type=float, default=0.5, show_default=True)
def command(slide: Path, out: Path, **grid) -> None:
    """Draw SLIDE's thumbnail with detected tissue and the tiles `ingest` would keep (same options)."""
    layout = preview_slide(slide, out, GridSettings(**grid))
    click.echo(f"{len(layout.grid.tiles)} tiles would be kept; preview written to {out}")
