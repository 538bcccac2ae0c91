"""`embedstore ingest STORE PATH...`: slides, image folders, manifests and point annotations."""

from pathlib import Path

import click

from embedstore import IngestOptions
from embedstore.core.errors import EmbedstoreError

from ..options import from_options, json_option, store_argument
from ..output import emit


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
@from_options(IngestOptions)
@click.option("--no-pixels", is_flag=True, help="Store references only (same as --codec none).")
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="KEY=COLUMN",
    help="Take group key slide/patient/image/dataset/split from a manifest column; repeatable.",
)
@json_option
def command(
    store: str, paths: tuple[Path, ...], no_pixels: bool, groups: tuple[str, ...], as_json: bool, **options
) -> None:
    """Ingest PATHS (slides, image folders, manifests, point tables) into STORE, created if missing.

    Byte-identical files become one source with one set of tiles (every path is recorded); when their
    labels disagree, --on-label-conflict decides. Re-running adds nothing; an interrupted run resumes.
    """
    from embedstore import init
    from embedstore.core.schema import MARKER_FILE

    if no_pixels:
        options["codec"] = "none"
    ingest_options = IngestOptions(groups=_parse_groups(groups), **options)
    created = not (Path(store) / MARKER_FILE).exists()
    opened = init(store, exist_ok=True)
    try:
        report = opened.ingest(list(paths), ingest_options)
    except BaseException:
        if created:  # a store made for a failed ingest is not left behind
            opened.catalog.remove_if_empty()
        raise
    if created:
        click.echo(f"created a new store at {opened.root}", err=as_json)  # stdout stays JSON with --json
    emit(report, as_json)
