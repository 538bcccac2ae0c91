"""`embedstore probe STORE --task TASK --backbones KEYS|all`: rank backbones on a labelled proxy task."""

import dataclasses
from pathlib import Path

import click

from embedstore import ProbeOptions

from ..options import OUTPUT_FILE, from_options, open_existing, store_argument


@click.command("probe")
@store_argument
@click.option(
    "--task", metavar="TASK", help="Labelled task to probe on; without it, label-free indicators only."
)
@click.option(
    "--backbones",
    default="all",
    show_default=True,
    metavar="KEYS|all",
    help="Backbone keys, comma-separated.",
)
@from_options(ProbeOptions, exclude=("shots",))
@click.option(
    "--shots",
    default=",".join(str(s) for s in ProbeOptions().shots or ()) or "none",
    show_default=True,
    help=next(f for f in dataclasses.fields(ProbeOptions) if f.name == "shots").metadata["help"],
)
@click.option("--json", "json_file", type=OUTPUT_FILE, help="Write the whole report (every split) as JSON.")
@click.option("--csv", "csv_file", type=OUTPUT_FILE, help="Write the summary with ranks as CSV.")
@click.option(
    "--plot", "plot_file", type=OUTPUT_FILE, help="Write a PNG: scores with intervals, few-shot curves."
)
@click.option("--no-progress", "progress", flag_value=False, default=True, help="Do not show a progress bar.")
def command(
    store: str,
    task: str | None,
    backbones: str,
    shots: str,
    json_file: Path | None,
    csv_file: Path | None,
    plot_file: Path | None,
    progress: bool,
    **options,
) -> None:
    """Rank STORE's backbones on --task with kNN, prototype and linear probes over the same group-aware
    folds (no group in both train and test), with 95 % intervals, a paired test between backbones, a
    verdict in words and how often each backbone wins when groups are resampled. Heavier analyses on
    request: --shots 4,16,64,256 (few-shot curve), --indicators (RankMe, view consistency, same-slide
    neighbours; without --task they are all that is reported), more --seeds.
    """
    if plot_file is not None and task is None:
        raise click.UsageError("--plot needs --task (the indicators alone are a table)")
    probe_options = ProbeOptions(
        **options,
        # the text "4,16,64" is parsed by the shots option's declaration (a dataclass field has one type)
        shots=None if shots.strip().lower() == "none" else shots,  # type: ignore[arg-type]
    )
    opened = open_existing(store)
    report = opened.probe(task, backbones, probe_options, progress=progress)
    click.echo(report.format())
    for path, write in ((json_file, report.write_json), (csv_file, report.write_csv)):
        if path is not None:
            click.echo(f"wrote {write(path)}", err=True)
    if plot_file is not None:
        click.echo(f"wrote {report.plot(plot_file)}", err=True)
