"""What a search shows a person: the terminal table (headers, file names, labels), the review page's file
names and negatives, `negatives=None`, and a short IndexManifest repr."""

from __future__ import annotations

import embedstore
from embedstore.search.review import write_review_page
from tests.cli.test_cli import assert_clean_error, run
from tests.helpers import add_task, clustered_vectors, vector_store, write_tiles

KEY = "synthetic.vectors"


def labelled_store(tmp_path) -> embedstore.Store:
    store = vector_store(tmp_path / "store", clustered_vectors(300, dim=16, clusters=6))
    add_task(store, "tumour", {f"t{i:06d}": "yes" if i % 3 == 0 else "no" for i in range(0, 300, 2)})
    store.index(KEY, kind="flat")
    return store


def test_the_terminal_table_has_headers_files_and_the_only_tasks_labels(tmp_path):
    store = labelled_store(tmp_path)
    result = run("search", store.root, "--backbone", KEY, "--tile", "t000001", "--tile", "t000004", "-k", "6")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "rank",
        "score",
        "file",
        "/",
        "tile",
        "slide",
        "position",
        "label",
        "(tumour)",
    ]
    assert len(lines) == 7
    hits = store.search(KEY, tiles=["t000001", "t000004"], k=6).hits.to_dicts()
    for line, hit in zip(lines[1:], hits, strict=True):
        cells = line.split()
        assert cells[:5] == [
            str(hit["rank"]),
            f"{hit['score']:.4f}",
            hit["tile_id"],
            hit["slide"],
            f"{hit['x']},0",
        ]
        index = int(hit["tile_id"][1:])
        assert cells[5] == ("-" if index % 2 else ("yes" if index % 3 == 0 else "no"))
    header_cells = [lines[0].index(name) for name in ("score", "file / tile", "slide", "position")]
    assert all(line[header_cells[1] - 2 : header_cells[1]] == "  " for line in lines)  # columns line up
    assert result.stderr.splitlines()[-1].startswith("6 hit(s) from index 'flat'")
    assert "centred" in result.stderr.splitlines()[-1]


def test_label_task_is_chosen_or_refused_in_one_line(tmp_path):
    store = labelled_store(tmp_path)
    add_task(store, "other", {"t000001": "a"})
    args = ["search", store.root, "--backbone", KEY, "--tile", "t000003", "-k", "3"]
    no_label = run(*args)  # two tasks: none shown unless asked
    assert no_label.exit_code == 0 and "label" not in no_label.stdout.splitlines()[0]
    chosen = run(*args, "--label-task", "tumour")
    assert chosen.stdout.splitlines()[0].endswith("label (tumour)")
    assert_clean_error(run(*args, "--label-task", "nope"), "--label-task 'nope': no tile is labelled")


def test_image_tiles_show_their_file_name(tmp_path):
    from embedstore.embed.local import embed

    folder = write_tiles(tmp_path / "tiles", 6, 2)
    store = embedstore.init(tmp_path / "img")
    store.ingest([folder], progress=False)
    embed(store.catalog, "handcrafted.color_texture", progress=False, workers=0, batch_size=8)
    result = store.search("handcrafted.color_texture", tiles=[min(store.catalog.tile_ids())], k=3)
    names = {p.name for p in folder.rglob("*.png")}
    lines = result.text_table(store)
    assert all(line.split()[2] in names for line in lines[1:])
    assert lines[0].split()[-1] == "tile_id"  # the ids --tile takes stay at hand
    assert [line.split()[-1] for line in lines[1:]] == result.hits["tile_id"].to_list()

    page = write_review_page(
        store.catalog,
        result.hits,
        tmp_path / "review.html",
        query_tile_ids=result.hits["tile_id"][:1].to_list(),
        negative_tile_ids=result.hits["tile_id"][1:2].to_list(),
    ).read_text()
    shown = [name for name in names if f'class="line file" title="{name}"' in page]
    assert len(shown) == 3  # each card names its file
    assert "Negatives: 1" in page and "Queries: 1 positive(s)" in page
    without = result.write_html(tmp_path / "plain.html", store).read_text()
    assert "No negatives were used." in without and "Negatives:" not in without


def test_negatives_none_is_no_negatives(tmp_path):
    store = labelled_store(tmp_path)
    with_none = store.search(KEY, tiles=["t000001"], negatives=None, k=5)
    assert (
        with_none.hits["tile_id"].to_list()
        == store.search(KEY, tiles=["t000001"], k=5).hits["tile_id"].to_list()
    )
    assert with_none.negative_tile_ids == []


def test_index_manifest_repr_is_short(tmp_path):
    store = labelled_store(tmp_path)
    (manifest,) = store.indexes(KEY)
    shown = repr(manifest)
    assert len(shown) < 250 and "mean" not in shown and str(manifest.mean[0]) not in shown
    assert shown.startswith("IndexManifest(name='flat', faiss flat") and "rows=300" in shown
    assert len(manifest.to_dict()["mean"]) == 16  # the full record is still there
