"""`embedstore predict STORE --head NAME`: score every tile of the head's backbone into `pred__<name>`.

--top, --class and --no-progress come from `heads.options.PredictOptions` (defaults and help written once)."""

from pathlib import Path

import click

from heads.options import PredictOptions

from ..options import OUTPUT_FILE, from_options, open_existing, store_argument


@click.command("predict")
@store_argument
@click.option("--head", "name", required=True, metavar="NAME", help="A head saved by `train-head`.")
@click.option("--export", type=OUTPUT_FILE, help="Also write the top tiles as CSV.")
@from_options(PredictOptions)
def command(store: str, name: str, export: Path | None, **options) -> None:
    """Predict with head NAME for every tile of its backbone not predicted yet (incremental), into the
    table `pred__NAME` (tile_id, score, probabilities, label)."""
    import heads

    checked = PredictOptions(**options)
    opened = open_existing(store)
    report = heads.predict(opened, name, progress=checked.progress)
    click.echo(report.summary())
    if export is not None:
        written = heads.export_top(opened, name, export, n=checked.top, class_name=checked.class_name)
        click.echo(f"wrote {written}", err=True)
