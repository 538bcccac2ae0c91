"""`embedstore ingest STORE PATH...`: slides, image folders, manifests and point annotations."""

import shutil
from pathlib import Path

import click

from embedstore import IngestOptions, init
from embedstore.discover import KINDS
from embedstore.errors import EmbedstoreError
from embedstore.pixels import CODECS
from embedstore.schema import MARKER_FILE

from ..options import store_argument


def _parse_groups(values: tuple[str, ...]) -> dict[str, str]:
    groups = {}
    for value in values:
        key, sep, column = value.partition("=")
        if not sep or not key or not column:
            raise EmbedstoreError(
                f"--group {value!r} must look like KEY=COLUMN, e.g. --group patient=case_id"
            )
        groups[key] = column
    return groups


@click.command("ingest")
@store_argument
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="auto",
    show_default=True,
    help="What PATH is; auto: tables by columns, folders of class folders as imagefolder, else slides.",
)
@click.option("--task", help="Record labels (class folders, label column) under this task name.")
@click.option("--dataset", help="Group key 'dataset' for these tiles (default: the path's name).")
@click.option(
    "--mpp", type=float, help="µm/px of the files, overriding their metadata (needed when it has none)."
)
@click.option("--target-mpp", type=float, default=0.5, show_default=True, help="µm/px of slide tiles.")
@click.option("--tile-size", type=int, default=224, show_default=True, help="Tile side in pixels.")
@click.option("--overlap", type=int, default=0, show_default=True, help="Overlap of slide tiles in pixels.")
@click.option(
    "--min-tissue",
    type=float,
    default=0.5,
    show_default=True,
    help="Keep slide tiles with at least this tissue fraction.",
)
@click.option(
    "--codec",
    type=click.Choice(CODECS),
    default="auto",
    show_default=True,
    help="Stored pixels: auto = PNG up to 128 px, JPEG above; image files are kept byte for byte.",
)
@click.option("--jpeg-quality", type=int, default=90, show_default=True)
@click.option("--no-pixels", is_flag=True, help="Store references only (embedding then needs the files).")
@click.option("--path-column", default="path", show_default=True, help="Manifest column with image paths.")
@click.option("--path-template", help="Build manifest paths from columns, e.g. '{dataset}_{uid}.png'.")
@click.option("--image-column", default="image", show_default=True, help="Point-table column with images.")
@click.option("--label-column", help="Manifest/point column with labels (default: 'label' if present).")
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="KEY=COLUMN",
    help="Take group key slide/patient/image/dataset/split from a column; repeatable.",
)
@click.option(
    "--images-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where manifest/point images live; files are also found by name below it.",
)
@click.option("--one-based", is_flag=True, help="Point coordinates start at 1 (MATLAB style).")
@click.option(
    "--workers", type=int, default=IngestOptions().workers, show_default=True, help="Parallel reader threads."
)
@click.option("--skip-errors", is_flag=True, help="Record failing sources and ingest the rest.")
def command(store: str, paths: tuple[Path, ...], no_pixels: bool, groups: tuple[str, ...], **options) -> None:
    """Ingest PATHS (slides, image folders, manifests, point tables) into STORE, created if missing."""
    if no_pixels:
        options["codec"] = "none"
    ingest_options = IngestOptions(groups=_parse_groups(groups), **options)
    ingest_options.validate()
    created = not (Path(store) / MARKER_FILE).exists()
    opened = init(store, exist_ok=True)
    try:
        report = opened.ingest(list(paths), ingest_options)
    except BaseException:
        if created:  # a store made for a failed ingest is removed again: nothing is left behind
            shutil.rmtree(opened.root, ignore_errors=True)
        raise
    click.echo(report.summary())
