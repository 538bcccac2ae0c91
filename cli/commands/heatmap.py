"""`embedstore heatmap STORE --head NAME --slide ID --out FILE.png`: a head's scores over the slide.

--class, --alpha, --style and --side-by-side come from `heads.options.HeatmapOptions` (defaults and help
written once)."""

from pathlib import Path

import click

from heads.options import HeatmapOptions

from ..options import OUTPUT_FILE, from_options, open_existing, store_argument


@click.command("heatmap")
@store_argument
@click.option("--head", "name", required=True, metavar="NAME", help="A head whose predictions exist.")
@click.option("--slide", required=True, metavar="ID", help="The slide: its source id, file name or stem.")
@click.option("--out", type=OUTPUT_FILE, default="heatmap.png", show_default=True, help="PNG to write.")
@from_options(HeatmapOptions)
@click.option(
    "--export-geojson", type=OUTPUT_FILE, help="Also write the tiles with their scores as GeoJSON for QuPath."
)
def command(store: str, name: str, slide: str, out: Path, export_geojson: Path | None, **options) -> None:
    """Draw head NAME's scores over the slide's thumbnail: blue (low) to yellow (high), more opaque as the
    score rises so low-scoring tissue stays visible, or with --style contour only outlines of score levels;
    colour bar, legend and tissue outline inside the image, which keeps the thumbnail's size (--side-by-side
    puts the plain thumbnail on its left). --export-geojson writes each tile as a QuPath detection
    with its scores as measurements (level-0 pixel coordinates; File > Import objects in QuPath)."""
    import heads

    checked = HeatmapOptions(**options)
    opened = open_existing(store)
    drawn = heads.heatmap(
        opened,
        name,
        slide,
        out,
        class_name=checked.class_name,
        alpha=checked.alpha,
        style=checked.style,
        side_by_side=checked.side_by_side,
    )
    click.echo(f"wrote {drawn}")
    if export_geojson is not None:
        click.echo(f"wrote {heads.export_geojson(opened, name, slide, export_geojson)}")
