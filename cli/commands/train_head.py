"""`embedstore train-head STORE --backbone KEY --task TASK --name NAME`: a small classifier on vectors."""

from pathlib import Path

import click

from ..options import OUTPUT_FILE, store_argument


@click.command("train-head")
@store_argument
@click.option(
    "--backbone", required=True, metavar="KEY", help="Backbone whose stored vectors the head reads."
)
@click.option("--task", required=True, metavar="TASK", help="Labelled task to learn.")
@click.option("--name", metavar="NAME", help="Name to save the head under [default: TASK-BACKBONE-HEAD].")
@click.option("--head", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True)
@click.option(
    "--aug",
    default="",
    metavar="SPEC",
    help="Feature-space augmentation, comma-separated: noise:SCALE, dropout:P, mixup:ALPHA[:within|across], "
    "smote:K, views (e.g. noise:0.1,mixup:0.4,smote:5,views). mixup mixes partners across classes by default "
    "(mixup:0.4 is mixup:0.4:across); :within mixes only tiles of the same class.",
)
@click.option("--tune", type=click.IntRange(min=1), metavar="N", help="Try N configurations; keep the best.")
@click.option("--epochs", type=click.IntRange(min=1), help="Most epochs (early stopping ends sooner).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Training batch size.")
@click.option("--lr", type=float, help="AdamW learning rate.")
@click.option("--weight-decay", type=float, help="AdamW weight decay.")
@click.option("--hidden", metavar="N[,N]", help="MLP hidden layer widths, e.g. 256 or 512,128.")
@click.option("--dropout", type=float, help="MLP dropout.")
@click.option("--loss", type=click.Choice(["ce", "focal"]), help="Cross-entropy or focal loss.")
@click.option("--no-class-weights", is_flag=True, help="Do not weight classes to balance them.")
@click.option(
    "--group-by", metavar="COLUMN", help="Group column for the split [default: patient/slide/image]."
)
@click.option("--validation", type=float, default=0.2, show_default=True, help="Share of groups held out.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a head of the same name.")
@click.option("--json", "json_file", type=OUTPUT_FILE, help="Write the training (or tuning) report as JSON.")
@click.option("--no-progress", "progress", flag_value=False, default=True, help="Do not show progress bars.")
def command(
    store: str,
    backbone: str,
    task: str,
    name: str | None,
    head: str,
    aug: str,
    tune: int | None,
    json_file: Path | None,
    progress: bool,
    **options,
) -> None:
    """Train a linear or MLP head on TASK from BACKBONE's stored vectors, streamed from STORE in batches:
    group-aware validation split, class weighting, early stopping, a tuned threshold (binary tasks), and
    feature-space augmentation. The head is saved in the store with a card (`embedstore predict` uses it).
    """
    import json

    import heads
    from embedstore.validation import output_file

    from ..options import open_existing

    params = _head_params(options)
    opened = open_existing(store)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    common = dict(
        name=name,
        head=head,
        group_by=options["group_by"],
        validation=options["validation"],
        seed=options["seed"],
        overwrite=options["overwrite"],
        progress=progress,
        say=say,
    )
    if tune is not None:
        if aug:
            params["augment"] = aug
        result = heads.tune(opened, backbone, task, tune, **common, **params)
        click.echo(result.format())
        if json_file is not None:
            click.echo(f"wrote {result.write_json(json_file)}", err=True)
        return
    trained = heads.train(opened, backbone, task, augment=aug, **common, **params)
    click.echo(trained.summary())
    if json_file is not None:
        report = {"card": trained.card.to_dict(), "history": trained.history, "notes": trained.notes}
        written = output_file("--json", json_file, make_folder=True)  # checked at parsing; folder made now
        written.write_text(json.dumps(report, indent=1, default=str))
        click.echo(f"wrote {json_file}", err=True)


def _head_params(options: dict) -> dict:
    """The estimator parameters given on the command line (the estimator's defaults for the rest)."""
    params = {
        key: options[key]
        for key in ("epochs", "batch_size", "lr", "weight_decay", "dropout", "loss")
        if options.get(key) is not None
    }
    if options.get("hidden"):
        try:
            params["hidden"] = tuple(int(part) for part in options["hidden"].split(","))
        except ValueError:
            raise click.BadParameter(
                "widths as integers, e.g. 256 or 512,128", param_hint="--hidden"
            ) from None
    if options.get("no_class_weights"):
        params["class_weight"] = None
    return params
