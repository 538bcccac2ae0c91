"""`embedstore train-head STORE --backbone KEY --task TASK --name NAME`: a small classifier on vectors.

The head and training flags come from `heads.options` (HeadOptions, TrainOptions): defaults, choices and
help are written there once."""

from pathlib import Path
from typing import Any

import click

from embedstore.core.reports import Report
from heads.options import HeadOptions, TrainOptions

from ..options import OUTPUT_FILE, from_options, store_argument


@click.command("train-head")
@store_argument
@click.option(
    "--backbone", required=True, metavar="KEY", help="Backbone whose stored vectors the head reads."
)
@click.option("--task", required=True, metavar="TASK", help="Labelled task to learn.")
@click.option("--name", metavar="NAME", help="Name to save the head under [default: TASK-BACKBONE-HEAD].")
@from_options(TrainOptions, only=("head",))
@from_options(HeadOptions, only=("augment",))
@click.option("--tune", type=click.IntRange(min=1), metavar="N", help="Try N configurations; keep the best.")
@from_options(HeadOptions, exclude=("augment", "seed"))
@click.option("--no-class-weights", is_flag=True, help="Do not weight classes to balance them.")
@from_options(TrainOptions, exclude=("head",))
@from_options(HeadOptions, only=("seed",))
@click.option("--json", "json_file", type=OUTPUT_FILE, help="Write the training (or tuning) report as JSON.")
@click.option("--no-progress", "progress", flag_value=False, default=True, help="Do not show progress bars.")
@click.pass_context
def command(
    ctx: click.Context,
    store: str,
    backbone: str,
    task: str,
    name: str | None,
    tune: int | None,
    json_file: Path | None,
    progress: bool,
    no_class_weights: bool,
    **options,
) -> None:
    """Train a linear or MLP head on TASK from BACKBONE's stored vectors, streamed from STORE in batches:
    group-aware validation split, class weighting, early stopping, a tuned threshold (binary tasks), and
    feature-space augmentation. The head is saved in the store with a card (`embedstore predict` uses it).
    """
    import heads

    from ..options import open_existing

    train = TrainOptions(**{k: options.pop(k) for k in TrainOptions.__dataclass_fields__})
    checked = HeadOptions(**options)  # every value checked (and --hidden parsed) before any work
    params = {k: getattr(checked, k) for k in options if _given(ctx, k) and k not in ("augment", "seed")}
    if no_class_weights:
        params["class_weight"] = None
    opened = open_existing(store)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    common: dict[str, Any] = dict(
        name=name,
        head=train.head,
        group_by=train.group_by,
        validation=train.validation,
        seed=checked.seed,
        overwrite=train.overwrite,
        progress=progress,
        say=say,
    )
    if tune is not None:
        if checked.augment:
            params["augment"] = checked.augment
        result: Report = heads.tune(opened, backbone, task, tune, **common, **params)
    else:
        result = heads.train(opened, backbone, task, augment=checked.augment, **common, **params)
    click.echo(result.summary())
    if json_file is not None:
        click.echo(f"wrote {result.write_json(json_file)}", err=True)


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the flag was given (the estimator's or the search's default applies to the rest)."""
    return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
