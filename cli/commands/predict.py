"""`embedstore predict STORE --head NAME`: score every tile of the head's backbone into `pred__<name>`."""

from pathlib import Path

import click

from ..options import OUTPUT_FILE, open_existing, store_argument


@click.command("predict")
@store_argument
@click.option("--head", "name", required=True, metavar="NAME", help="A head saved by `train-head`.")
@click.option("--export", type=OUTPUT_FILE, help="Also write the top tiles as CSV.")
@click.option("--top", type=click.IntRange(min=1), default=100, show_default=True, help="Rows in --export.")
@click.option(
    "--class", "class_name", metavar="CLASS", help="Rank --export by this class [default: positive]."
)
@click.option("--no-progress", "progress", flag_value=False, default=True, help="Do not show a progress bar.")
def command(
    store: str, name: str, export: Path | None, top: int, class_name: str | None, progress: bool
) -> None:
    """Predict with head NAME for every tile of its backbone not predicted yet (incremental), into the
    table `pred__NAME` (tile_id, score, probabilities, label)."""
    import heads

    opened = open_existing(store)
    report = heads.predict(opened, name, progress=progress)
    click.echo(report.summary())
    if export is not None:
        click.echo(f"wrote {heads.export_top(opened, name, export, n=top, class_name=class_name)}", err=True)
