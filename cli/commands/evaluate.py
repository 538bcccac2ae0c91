"""`embedstore evaluate STORE --head NAME --task TASK`: a saved head's scores on a labelled task."""

from pathlib import Path

import click

from ..options import OUTPUT_FILE, open_existing, store_argument


@click.command("evaluate")
@store_argument
@click.option("--head", "name", required=True, metavar="NAME", help="A head saved by `train-head`.")
@click.option("--task", required=True, metavar="TASK", help="Labelled task to score it on.")
@click.option("--include-training", is_flag=True, help="Also score tiles the head trained or validated on.")
@click.option(
    "--group-by", metavar="COLUMN", help="Bootstrap unit [default: patient, else slide, else image]."
)
@click.option("--bootstrap", type=click.IntRange(min=1), default=1000, show_default=True, help="Resamples.")
@click.option("--json", "json_file", type=OUTPUT_FILE, help="Write the report as JSON.")
@click.option(
    "--plot", type=OUTPUT_FILE, help="Draw ROC and precision-recall curves and the confusion matrix."
)
@click.option("--no-progress", "progress", flag_value=False, default=True, help="Do not show progress bars.")
def command(
    store: str,
    name: str,
    task: str,
    include_training: bool,
    group_by: str | None,
    bootstrap: int,
    json_file: Path | None,
    plot: Path | None,
    progress: bool,
) -> None:
    """Score head NAME on the labelled tiles of TASK: AUROC, average precision, balanced accuracy, F1 and
    the confusion matrix at the head's threshold, with bootstrap 95 % intervals over groups (slides or
    patients). Tiles the head trained or validated on are left out unless --include-training."""
    import heads

    report = heads.evaluate(
        open_existing(store),
        name,
        task,
        include_training=include_training,
        group_by=group_by,
        bootstrap=bootstrap,
        progress=progress,
    )
    click.echo(report.summary())
    if json_file is not None:
        click.echo(f"wrote {report.write_json(json_file)}", err=True)
    if plot is not None:
        from heads.evaluation_plot import plot_evaluation

        click.echo(f"wrote {plot_evaluation(report, plot)}", err=True)
