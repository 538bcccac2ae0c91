"""Labels, tile ids, paths and group keys are kept exactly as written; empty labels, conflicting rows, bad
encodings, non-numeric coordinates and paths out of --images-dir are refused in one line, nothing written."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner

import embedstore
from cli.main import app
from embedstore import EmbedstoreError, IngestOptions
from embedstore.core.schema import TILES, TILES_SCHEMA
from tests.helpers import table_versions, write_image

# Columns of text that CSV type inference re-types when a whole column looks alike (007 -> 7, 1e3 ->
# 1000.0, TRUE -> true), and quoted comma lists; each must come back exactly as written.
HOSTILE = {
    "zero-padded": ["007", "010", "0123"],
    "exponent-and-decimal": ["1e3", "2.50", "1E-2"],
    "boolean": ["TRUE", "false", "True"],
    "quoted-comma-list": ["1,0,1.5", "2,0", "0,1"],
}
hostile = pytest.mark.parametrize("written", list(HOSTILE.values()), ids=list(HOSTILE))


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def labels_of(store, task: str) -> dict[str, str]:
    rows = store.catalog.read("labels", columns=["task", "tile_id", "label"]).to_pylist()
    return {r["tile_id"]: r["label"] for r in rows if r["task"] == task}


def tile_of_image(store) -> dict[str, str]:
    """image group key -> tile id."""
    return {
        t["image"]: t["tile_id"]
        for t in store.catalog.read("tiles", columns=["image", "tile_id"]).to_pylist()
    }


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Five 16 px images, im0.png .. im4.png."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        write_image(folder / f"im{i}.png", 16, seed=i)
    return folder


@pytest.fixture
def tiles(store, images) -> list[str]:
    """The five images ingested as one tile each; their tile ids in image order."""
    store.ingest([images], IngestOptions(kind="images", progress=False))
    by_image = tile_of_image(store)
    return [by_image[f"im{i}.png"] for i in range(5)]


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


# --- labels import: text as written ---------------------------------------------------------------------


@hostile
def test_labels_import_keeps_every_label_exactly_as_written(store, tiles, tmp_path, written):
    rows = [[t, label] for t, label in zip(tiles, written, strict=False)]
    report = store.import_labels("t", write_csv(tmp_path / "l.csv", ["tile_id", "label"], rows))
    assert report.labels_written == len(written)
    assert labels_of(store, "t") == dict(zip(tiles, written, strict=False))


@hostile
def test_labels_import_by_position_keeps_labels_as_written(store, tiles, tmp_path, written):
    rows = [[f"im{i}.png", "0", "0", label] for i, label in enumerate(written)]
    store.import_labels("t", write_csv(tmp_path / "l.csv", ["source", "x", "y", "label"], rows))
    assert labels_of(store, "t") == dict(zip(tiles, written, strict=False))


def test_tile_ids_that_look_like_numbers_are_matched_as_written(store, tmp_path):
    ids = ["007", "010", "0123"]
    rows = [
        {
            "tile_id": t,
            "source_id": "src",
            "x": 16 * i,
            "y": 0,
            "level": 0,
            "size0": 16,
            "width": 16,
            "height": 16,
        }
        for i, t in enumerate(ids)
    ]
    store.catalog.insert_missing(TILES, pa.Table.from_pylist(rows, schema=TILES_SCHEMA))
    path = write_csv(tmp_path / "l.csv", ["tile_id", "label"], [[t, f"c{t}"] for t in ids])
    assert store.import_labels("t", path).labels_written == 3
    assert labels_of(store, "t") == {t: f"c{t}" for t in ids}


def test_parquet_numbers_become_their_text_and_integers_lose_the_point_zero(store, tiles, tmp_path):
    path = tmp_path / "l.parquet"
    # a float column holding integers (what pandas writes once a value is missing) and one real fraction
    pl.DataFrame({"tile_id": tiles[:3], "label": [7.0, 10.0, 1.5]}).write_parquet(path)
    store.import_labels("floats", path)
    assert labels_of(store, "floats") == {tiles[0]: "7", tiles[1]: "10", tiles[2]: "1.5"}
    pl.DataFrame({"tile_id": tiles[:2], "label": [7, 10]}).write_parquet(path)
    store.import_labels("ints", path)
    assert labels_of(store, "ints") == {tiles[0]: "7", tiles[1]: "10"}


# --- labels import: empty labels ------------------------------------------------------------------------


def test_an_empty_label_is_refused_and_the_existing_labels_are_kept(store, tiles, tmp_path):
    store.import_labels(
        "t", write_csv(tmp_path / "old.csv", ["tile_id", "label"], [[t, "old"] for t in tiles])
    )
    versions = table_versions(store)
    rows = [[tiles[0], "new"], [tiles[1], ""], [tiles[2], "   "]]
    path = write_csv(tmp_path / "l.csv", ["tile_id", "label"], rows)
    with pytest.raises(
        EmbedstoreError, match=r"l\.csv: 2 row\(s\) have an empty 'label' \(row 2, 3\).*nothing"
    ):
        store.import_labels("t", path)
    assert labels_of(store, "t") == {t: "old" for t in tiles}
    assert table_versions(store) == versions


def test_skip_empty_labels_imports_the_other_rows_and_counts_the_skipped(store, tiles, tmp_path):
    store.import_labels("t", write_csv(tmp_path / "old.csv", ["tile_id", "label"], [[tiles[1], "old"]]))
    rows = [[tiles[0], "new"], [tiles[1], ""], [tiles[2], "  "]]
    report = store.import_labels(
        "t", write_csv(tmp_path / "l.csv", ["tile_id", "label"], rows), skip_empty_labels=True
    )
    assert (report.labels_written, report.labels_skipped_empty) == (1, 2)
    assert "2 row(s) with an empty label skipped" in report.summary()
    assert labels_of(store, "t") == {tiles[0]: "new", tiles[1]: "old"}  # never written as null


# --- labels import: conflicting rows --------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "kept"), [("first", "a"), ("drop", "old")])
def test_rows_giving_one_tile_two_labels_follow_on_label_conflict(store, tiles, tmp_path, policy, kept):
    store.import_labels("t", write_csv(tmp_path / "old.csv", ["tile_id", "label"], [[tiles[0], "old"]]))
    rows = [[tiles[0], "a"], [tiles[1], "x"], [tiles[0], "b"], [tiles[1], "x"]]  # tile 1: same label twice
    report = store.import_labels(
        "t", write_csv(tmp_path / "l.csv", ["tile_id", "label"], rows), on_label_conflict=policy
    )
    assert len(report.label_conflicts) == 1 and report.label_conflicts[0]["tile_id"] == tiles[0]
    assert "note: 1 tile(s) got different labels from several rows" in report.summary()
    assert "'a' from l.csv row 1, 'b' from l.csv row 3" in report.summary()
    assert labels_of(store, "t") == {tiles[0]: kept, tiles[1]: "x"}


def test_conflicting_rows_with_on_label_conflict_error_write_nothing(store, tiles, tmp_path):
    rows = [[tiles[1], "x"], [tiles[0], "a"], [tiles[0], "b"]]
    path = write_csv(tmp_path / "l.csv", ["tile_id", "label"], rows)
    with pytest.raises(EmbedstoreError, match=r"conflicting labels for task 't': 'a' from l\.csv row 2, 'b'"):
        store.import_labels("t", path, on_label_conflict="error")
    assert labels_of(store, "t") == {}


# --- reading the file -----------------------------------------------------------------------------------


def test_a_latin1_file_is_refused_naming_the_encoding_and_the_fix(store, tiles, images, tmp_path):
    labels = write_csv(tmp_path / "l.csv", ["tile_id", "label"], [[tiles[0], "nécrose"]], encoding="latin-1")
    with pytest.raises(
        EmbedstoreError, match=r"l\.csv: not UTF-8 text \(byte 0xe9 on line 2.*save it as UTF-8"
    ):
        store.import_labels("t", labels)
    manifest = write_csv(tmp_path / "m.csv", ["path", "label"], [["im0.png", "nécrose"]], encoding="latin-1")
    with pytest.raises(EmbedstoreError, match=r"m\.csv: not UTF-8 text .*save it as UTF-8"):
        store.ingest([manifest], IngestOptions(images_dir=images, task="t", progress=False))
    assert labels_of(store, "t") == {}


def test_a_utf8_file_with_a_byte_order_mark_is_read(store, tiles, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(f"tile_id,label\n{tiles[0]},nécrose\n".encode("utf-8-sig"))
    store.import_labels("t", path)
    assert labels_of(store, "t") == {tiles[0]: "nécrose"}


def test_a_coordinate_that_is_not_a_number_names_the_file_column_and_row(store, tiles, images, tmp_path):
    points = write_csv(
        tmp_path / "p.csv",
        ["image", "x", "y", "label"],
        [["im0.png", "3", "4", "a"], ["im0.png", "abc", "4", "b"]],
    )
    with pytest.raises(EmbedstoreError, match=r"p\.csv: column 'x' must hold numbers, but row 2 .* is 'abc'"):
        store.ingest([points], IngestOptions(images_dir=images, task="p", tile_size=8, progress=False))
    by_position = write_csv(tmp_path / "l.csv", ["source", "x", "y", "label"], [["im0.png", "0", "", "a"]])
    with pytest.raises(EmbedstoreError, match=r"l\.csv: column 'y' must hold numbers, but row 1 .* is empty"):
        store.import_labels("t", by_position)
    assert labels_of(store, "t") == {} and labels_of(store, "p") == {}


# --- manifest and point-table ingest --------------------------------------------------------------------


@hostile
def test_manifest_ingest_keeps_labels_and_group_keys_exactly_as_written(store, images, tmp_path, written):
    rows = [[f"im{i}.png", label, label] for i, label in enumerate(written)]
    manifest = write_csv(tmp_path / "m.csv", ["path", "label", "patient"], rows)
    report = store.ingest([manifest], IngestOptions(images_dir=images, task="t", progress=False))
    assert report.labels_written == len(written)
    by_image = tile_of_image(store)
    assert labels_of(store, "t") == {by_image[f"im{i}.png"]: label for i, label in enumerate(written)}
    tiles = store.catalog.read("tiles", columns=["image", "patient"]).to_pylist()
    assert {t["image"]: t["patient"] for t in tiles} == {f"im{i}.png": p for i, p in enumerate(written)}


@hostile
def test_point_table_labels_are_kept_as_written(store, images, tmp_path, written):
    spots = [(4, 4), (12, 4), (4, 12)]  # three distinct 8 px tiles on a 16 px image
    rows = [["im0.png", str(x), str(y), label] for (x, y), label in zip(spots, written, strict=True)]
    points = write_csv(tmp_path / "p.csv", ["image", "x", "y", "label"], rows)
    report = store.ingest([points], IngestOptions(images_dir=images, task="p", tile_size=8, progress=False))
    assert report.tiles_added == 3
    assert sorted(labels_of(store, "p").values()) == sorted(written)


def test_manifest_empty_labels_are_refused_with_a_task_and_nothing_is_ingested(store, images, tmp_path):
    rows = [["im0.png", "a"], ["im1.png", ""], ["im2.png", " "]]
    manifest = write_csv(tmp_path / "m.csv", ["path", "label"], rows)
    with pytest.raises(
        EmbedstoreError, match=r"m\.csv: 2 row\(s\) have an empty 'label' \(row 2, 3\).*--skip-empty-labels"
    ):
        store.ingest([manifest], IngestOptions(images_dir=images, task="t", progress=False))
    assert store.info()["tiles"] == 0


def test_manifest_skip_empty_labels_ingests_those_tiles_without_a_label(store, images, tmp_path):
    rows = [["im0.png", "a"], ["im1.png", ""], ["im2.png", " "]]
    manifest = write_csv(tmp_path / "m.csv", ["path", "label"], rows)
    options = IngestOptions(images_dir=images, task="t", skip_empty_labels=True, progress=False)
    report = store.ingest([manifest], options)
    assert (report.tiles_added, report.labels_written, report.labels_skipped_empty) == (3, 1, 2)
    assert "labels: 1 written, 2 empty skipped" in report.summary()
    assert list(labels_of(store, "t").values()) == ["a"]


def test_manifest_empty_labels_without_a_task_are_no_error(store, images, tmp_path):
    manifest = write_csv(tmp_path / "m.csv", ["path", "label"], [["im0.png", "a"], ["im1.png", ""]])
    report = store.ingest([manifest], IngestOptions(images_dir=images, progress=False))
    assert report.tiles_added == 2 and labels_of(store, "t") == {}


def test_manifest_rows_giving_one_image_two_labels_follow_on_label_conflict(store, images, tmp_path):
    manifest = write_csv(tmp_path / "m.csv", ["path", "label"], [["im0.png", "a"], ["im0.png", "b"]])
    with pytest.raises(EmbedstoreError, match="conflicting labels for task 't'"):
        store.ingest(
            [manifest], IngestOptions(images_dir=images, task="t", on_label_conflict="error", progress=False)
        )
    report = store.ingest([manifest], IngestOptions(images_dir=images, task="t", progress=False))
    assert len(report.label_conflicts) == 1 and list(labels_of(store, "t").values()) == ["a"]
    assert "'a' from " in report.summary() and "(m.csv row 1), 'b' from " in report.summary()
    assert "(m.csv row 2); kept 'a'" in report.summary()


def test_a_manifest_path_leaving_images_dir_is_refused_naming_the_row(store, images, tmp_path):
    outside = write_image(tmp_path / "outside.png", 16, seed=9)
    manifest = write_csv(tmp_path / "m.csv", ["path"], [["im0.png"], [f"../{outside.name}"]])
    with pytest.raises(
        EmbedstoreError, match=r"m\.csv: row 2's path '\.\./outside\.png' leads outside --images-dir"
    ):
        store.ingest([manifest], IngestOptions(images_dir=images, progress=False))
    assert store.info()["tiles"] == 0


def test_without_images_dir_paths_are_relative_to_the_manifest_and_may_climb(store, images, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = write_csv(lists / "m.csv", ["path"], [["../images/im0.png"]])
    assert store.ingest([manifest], IngestOptions(progress=False)).tiles_added == 1


def test_path_template_fills_text_as_written_and_numbers_for_format_specs(store, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_image(folder / "007_003.png", 16, seed=1)
    manifest = write_csv(tmp_path / "m.csv", ["case", "idx"], [["007", "3"]])
    options = IngestOptions(images_dir=folder, path_template="{case}_{idx:03d}.png", progress=False)
    assert store.ingest([manifest], options).tiles_added == 1
    options = IngestOptions(images_dir=folder, path_template="{case}_{}.png", progress=False)
    with pytest.raises(
        EmbedstoreError, match=r"--path-template '\{case\}_\{\}\.png' cannot be filled from row 1"
    ):
        store.ingest([manifest], options)


# --- the command line -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("labels", "import", "{store}", "{tmp}/empty.csv", "--task", "t"), "2 row(s) have an empty 'label'"),
        (
            (
                "labels",
                "import",
                "{store}",
                "{tmp}/conflict.csv",
                "--task",
                "t",
                "--on-label-conflict",
                "error",
            ),
            "has conflicting labels for task 't'",
        ),
        (("labels", "import", "{store}", "{tmp}/latin1.csv", "--task", "t"), "not UTF-8 text"),
        (
            ("ingest", "{store}", "{tmp}/points.csv", "--images-dir", "{images}", "--task", "t"),
            "column 'x' must hold numbers",
        ),
        (("ingest", "{store}", "{tmp}/escape.csv", "--images-dir", "{images}"), "leads outside --images-dir"),
    ],
)
def test_cli_refusals_are_one_line_with_exit_code_2_and_change_nothing(
    store, tiles, images, tmp_path, args, message
):
    write_csv(
        tmp_path / "empty.csv", ["tile_id", "label"], [[tiles[0], "a"], [tiles[1], ""], [tiles[2], " "]]
    )
    write_csv(tmp_path / "conflict.csv", ["tile_id", "label"], [[tiles[0], "a"], [tiles[0], "b"]])
    write_csv(tmp_path / "latin1.csv", ["tile_id", "label"], [[tiles[0], "nécrose"]], encoding="latin-1")
    write_csv(tmp_path / "points.csv", ["image", "x", "y"], [["im0.png", "abc", "1"]])
    write_csv(tmp_path / "escape.csv", ["path"], [["../im0.png"]])
    versions = table_versions(store)
    result = run(*(a.format(store=store.root, tmp=tmp_path, images=images) for a in args))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert table_versions(store) == versions


def test_cli_reports_skipped_empty_labels_and_settled_conflicts(store, tiles, tmp_path):
    rows = [[tiles[0], "007"], [tiles[1], ""], [tiles[2], "a"], [tiles[2], "b"]]
    path = write_csv(tmp_path / "l.csv", ["tile_id", "label"], rows)
    result = run("labels", "import", store.root, path, "--task", "t", "--skip-empty-labels")
    assert result.exit_code == 0, result.output
    assert "2 label(s) written for task 't'" in result.output
    assert "1 row(s) with an empty label skipped" in result.output
    assert "note: 1 tile(s) got different labels" in result.output
    assert labels_of(embedstore.open(store.root), "t") == {tiles[0]: "007", tiles[2]: "a"}
