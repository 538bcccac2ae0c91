"""`embedstore search STORE --backbone KEY --tile ID ...`: tiles most like a few positives."""

from pathlib import Path

import click

from embedstore.core.errors import EmbedstoreError
from embedstore.core.validation import FileName, check_value
from embedstore.search import SearchOptions, shown_task

from ..options import OUTPUT_FILE, from_options, json_option, open_existing, store_argument
from ..output import emit_json


@click.command("search")
@store_argument
@click.option("--backbone", required=True, metavar="KEY", help="Backbone whose vectors to search.")
@click.option("--tile", "tiles", multiple=True, metavar="ID", help="A positive tile id (repeatable).")
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A positive image file, embedded like the table's tiles (repeatable).",
)
@click.option(
    "--vectors",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Positive vectors: a .npy of shape (n, dim) or (dim,).",
)
@click.option("--negative", "negatives", multiple=True, metavar="ID", help="A negative tile id (repeatable).")
@from_options(SearchOptions)
@json_option
@click.option("--export", type=OUTPUT_FILE, help="Write the hits as a labels CSV.")
@click.option("--export-label", default="candidate", show_default=True, help="The label --export writes.")
@click.option(
    "--label-task",
    metavar="TASK",
    help="Show each hit's label for this task [default: the store's only task, if it has one].",
)
@click.option("--html", type=OUTPUT_FILE, help="Write a review page.")
@click.option(
    "--review-task", default="review", show_default=True, help="Task name the review page's CSV is for."
)
def command(
    store: str,
    backbone: str,
    tiles: tuple[str, ...],
    images: tuple[Path, ...],
    vectors: Path | None,
    negatives: tuple[str, ...],
    as_json: bool,
    export: Path | None,
    export_label: str,
    label_task: str | None,
    html: Path | None,
    review_task: str,
    **options,
) -> None:
    """Find the tiles of STORE most like the positives (--tile, --image, --vectors), best first.

    Several positives are fused (--fusion); --negative tiles push their neighbours down. Cosine scores
    are centred on the mean of the tiles the filters leave (--center pool), as the index was built
    (--center index) or not at all (none); the last line on stderr names the index and the centring. The
    first search of a backbone without an index builds one (see `embedstore index`).

    The positives are checked first: a `warning:` line names outliers (the other positives rank them
    below half of the pool) or an incoherent set; --drop-outliers searches without the outliers.
    """
    search_options = SearchOptions(**options)
    check_value("--review-task", review_task, FileName())  # before a search may build an index
    opened = open_existing(store)
    if label_task is not None:
        shown_task(opened.catalog, label_task)  # an unknown task is refused before searching
    say = None if as_json else (lambda line: click.echo(line, err=True))
    searcher = opened.searcher(backbone, search_options.index, search_options.update)
    searcher.say = say
    raw = _load_vectors(vectors) if vectors is not None else None
    result = searcher.search(list(tiles), list(images), raw, list(negatives), search_options)
    warning = result.query_check.warning()
    if warning:
        click.echo(f"warning: {warning}", err=True)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if export is not None:
        result.export_labels(export, export_label)
    if html is not None:
        result.write_html(html, opened, review_task)
    if as_json:
        click.echo(f"{result.hits.height} hit(s) from {result.described()}", err=True)
        emit_json(result.to_records())  # each record names its index and centring
        return
    for line in result.text_table(opened, label_task):
        click.echo(line)
    if export is not None:
        click.echo(f"wrote {export}: `embedstore labels import {store} --task TASK {export}`", err=True)
    if html is not None:
        click.echo(f"wrote review page {html}", err=True)
    click.echo(f"{result.hits.height} hit(s) from {result.described()}", err=True)


def _load_vectors(path: Path):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise EmbedstoreError(f"--vectors {path}: not a readable .npy file ({error})") from None
