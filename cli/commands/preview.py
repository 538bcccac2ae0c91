"""`embedstore preview SLIDE --out FILE.png`: see the tissue mask and tile grid before ingesting."""

from pathlib import Path

import click

from embedstore.sources import GridSettings

from ..options import OUTPUT_FILE, from_options


@click.command("preview")
@click.argument("slide", type=click.Path(path_type=Path))
@click.option("--out", type=OUTPUT_FILE, default="preview.png", show_default=True, help="PNG to write.")
@from_options(GridSettings)
def command(slide: Path, out: Path, **grid) -> None:
    """Draw SLIDE's thumbnail with detected tissue and the tiles `ingest` would keep (same options)."""
    from embedstore.sources import preview_slide

    layout = preview_slide(slide, out, GridSettings(**grid))
    click.echo(f"{len(layout.grid.tiles)} tiles would be kept; preview written to {out}")
