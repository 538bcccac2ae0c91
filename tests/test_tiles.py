"""`store.tiles` and `embedstore tiles`: tiles with their file, slide, position, groups and labels; a CSV
that `labels import` reads and whose tile ids `search --tile` takes; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import embedstore
from tests.cli.test_cli import assert_clean_error, run
from tests.helpers import add_task, synthetic_slide, write_image, write_pyramid

BACKBONE = "handcrafted.color_texture"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[embedstore.Store, Path]:
    """A store of one slide (6 tiles of 128 px, unlabelled) and an image folder labelled for `tumour`
    (train: 2 tumour + 1 normal, valid: 1 tumour + 1 normal), the images also labelled for `grade`."""
    root = tmp_path_factory.mktemp("tiles")
    folder = root / "folder"
    seed = 0
    for split, label, count in [("train", "tumour", 2), ("train", "normal", 1), ("valid", "tumour", 1)]:
        (folder / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed += 1
            write_image(folder / split / label / f"{label}_{i}.png", 32, seed)
    (folder / "valid" / "normal").mkdir(parents=True)
    write_image(folder / "valid" / "normal" / "normal_0.png", 32, 99)
    store = embedstore.init(root / "store")
    store.ingest([folder], task="tumour", progress=False)
    store.ingest(
        [write_pyramid(root / "slideA.tif", synthetic_slide(512, 768)[0])], tile_size=128, progress=False
    )
    images = store.tiles("tumour")
    add_task(store, "grade", {t: f"g{i % 2}" for i, t in enumerate(images["tile_id"])})
    return store, root


def test_every_tile_with_its_file_position_groups_and_every_tasks_labels(made):
    store, _ = made
    tiles = store.tiles()
    assert tiles.height == 5 + 6 == store.catalog.count("tiles")
    assert tiles.columns[:2] == ["tile_id", "file"]
    assert {"slide", "x", "y", "level", "size0", "split", "label_grade", "label_tumour"} <= set(tiles.columns)
    slide = tiles.filter(tiles["slide"] == "slideA.tif")
    assert slide.height == 6 and slide["file"].str.ends_with("slideA.tif").all()
    assert slide["label_tumour"].null_count() == 6  # the slide's tiles have no labels
    assert list(zip(slide["y"], slide["x"], strict=True)) == sorted(zip(slide["y"], slide["x"], strict=True))
    assert set(slide["size0"]) == {128}
    images = tiles.filter(tiles["label_tumour"].is_not_null())
    names = {Path(f).name: lab for f, lab in zip(images["file"], images["label_tumour"], strict=True)}
    assert names == {"tumour_0.png": "tumour", "tumour_1.png": "tumour", "normal_0.png": "normal"}  # per name
    assert sorted(images["split"]) == ["train"] * 3 + ["valid"] * 2


def test_one_task_gives_a_label_column_and_only_its_tiles(made):
    store, _ = made
    tumour = store.tiles("tumour")
    assert tumour.height == 5 and tumour.columns[-1] == "label"
    by_file = {Path(f).parent.name: lab for f, lab in zip(tumour["file"], tumour["label"], strict=True)}
    assert by_file == {"tumour": "tumour", "normal": "normal"}  # the folder each file is in
    both = store.tiles(["tumour", "grade"])
    assert both.height == 5 and sorted(both["label_grade"]) == ["g0", "g0", "g0", "g1", "g1"]


def test_where_limit_and_columns(made):
    store, _ = made
    valid = store.tiles("tumour", where="split = 'valid'")
    assert sorted(valid["label"]) == ["normal", "tumour"]
    right = store.tiles(where="slide = 'slideA.tif' AND x >= 256")
    assert right.height == 4 and right["x"].min() == 256
    first = store.tiles(limit=2)
    assert first.height == 2 and first["tile_id"].to_list() == store.tiles()["tile_id"].to_list()[:2]
    picked = store.tiles("tumour", columns="file,label")
    assert picked.columns == ["tile_id", "file", "label"]
    assert store.tiles(columns=["mpp", "tissue_fraction"]).columns == ["tile_id", "mpp", "tissue_fraction"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"columns": "file,bogus"}, "--columns 'bogus' must be a column of the listing: tile_id, file,"),
        ({"task": "nope"}, "--task 'nope': no labels for this task; tasks: grade, tumour"),
        (
            {"where": "colour = 'red'"},
            "tile columns: Schema error: No field named colour. columns: tile_id, source_id, x, y",
        ),
        (
            {"where": "x > 1; drop table tiles"},
            "--where 'x > 1; drop table tiles' must be one SQL expression",
        ),
        ({"limit": 0}, "--limit 0 must be an integer >= 1"),
        ({"columns": ""}, "--columns '' must be distinct non-empty names"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(made, kwargs, message):
    store, _ = made
    with pytest.raises(embedstore.EmbedstoreError) as caught:
        store.tiles(**kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    result = run("tiles", store.root, *_flags(kwargs))
    assert_clean_error(result, message)


def _flags(kwargs: dict) -> list[str]:
    return [part for name, value in kwargs.items() for part in (f"--{name}", str(value))]


def test_the_terminal_table_has_headers_and_says_how_many_are_shown(made):
    store, _ = made
    shown = run("tiles", store.root, "--task", "tumour", "--limit", "3")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split() == [
        "tile_id",
        "file",
        "x",
        "y",
        "level",
        "size0",
        "image",
        "dataset",
        "split",
        "label",
    ]
    assert len(lines) == 1 + 3 + 1 and lines[-1].startswith("3 of 5 tiles")
    assert lines[1].split()[0] == store.tiles("tumour")["tile_id"][0]
    everything = run("tiles", store.root, "--where", "slide = 'slideA.tif'")
    header, *rows, last = everything.output.splitlines()
    assert last == "6 tiles" and len(rows) == 6
    # empty group columns are left out; label columns stay, "-" where a tile has no label
    assert header.split() == ["tile_id", "file", "slide", "x", "y", "level", "size0", "dataset"] + [
        "label_grade",
        "label_tumour",
    ]
    assert all(row.split()[-2:] == ["-", "-"] for row in rows)


def test_csv_goes_back_into_labels_import_and_its_ids_into_search(made, tmp_path):
    store, _ = made
    csv = tmp_path / "valid.csv"
    written = run("tiles", store.root, "--task", "tumour", "--where", "split = 'valid'", "--csv", csv)
    assert written.exit_code == 0 and written.output.strip() == f"wrote 2 tiles to {csv}"
    imported = run("labels", "import", store.root, csv, "--task", "tumour_copy")
    assert imported.exit_code == 0 and "2 label(s) written for task 'tumour_copy'" in imported.output
    copy = store.tiles("tumour_copy")
    assert copy.select("tile_id", "label").equals(
        store.tiles("tumour", where="split = 'valid'").select("tile_id", "label")
    )

    data = tmp_path / "slide.json"
    assert run("tiles", store.root, "--where", "slide = 'slideA.tif'", "--json", data).exit_code == 0
    rows = json.loads(data.read_text())
    assert len(rows) == 6 and rows[0]["slide"] == "slideA.tif" and rows[0]["size0"] == 128
    store.embed(BACKBONE, progress=False, workers=0, batch_size=8)
    query = rows[2]["tile_id"]
    found = run("search", store.root, "--backbone", BACKBONE, "--tile", query, "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert len(hits) == 3 and query not in {hit["tile_id"] for hit in hits}  # the positive is left out
    assert hits[0]["slide"] == "slideA.tif"  # the nearest tile: tissue of the same slide
