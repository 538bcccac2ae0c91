"""Ingest of whole-slide images: tissue grid, levels, exact pixels, µm/px handling, idempotence."""

from __future__ import annotations

import numpy as np
import pytest

from embedstore import IngestOptions, SourceError
from embedstore.core import hooks
from embedstore.sources.codecs import decode_tile
from tests.helpers import synthetic_slide, table_versions, write_pyramid

OPTIONS = dict(target_mpp=1.0, tile_size=128, min_tissue=0.5, progress=False)


def test_tiles_cover_tissue_and_not_glass(store, slide_path, slide_pixels):
    report = store.ingest([slide_path], IngestOptions(**OPTIONS))
    tiles = store.catalog.read("tiles").to_pylist()
    _, mask = slide_pixels
    assert report.sources_ok == 1 and report.tiles_added == len(tiles) > 10
    size0 = 256  # 128 px at 1.0 µm/px from a 0.5 µm/px slide
    positions = {(t["x"], t["y"]) for t in tiles}
    for y in range(0, mask.shape[0] - size0 + 1, size0):
        for x in range(0, mask.shape[1] - size0 + 1, size0):
            fraction = mask[y : y + size0, x : x + size0].mean()
            if fraction == 1.0:
                assert (x, y) in positions, f"tile fully on tissue at {(x, y)} missing"
            if fraction == 0.0:
                assert (x, y) not in positions, f"tile on bare glass at {(x, y)} kept"
    assert all(t["size0"] == size0 and t["mpp"] == 1.0 and t["tissue_fraction"] >= 0.5 for t in tiles)


def test_reads_the_best_level_and_stores_exact_pixels(store, slide_path, slide_pixels):
    store.ingest([slide_path], IngestOptions(**OPTIONS))
    image, _ = slide_pixels
    tiles = store.catalog.read("tiles").to_pylist()
    assert {t["level"] for t in tiles} == {1}  # downsample 2 matches 1.0 µm/px exactly
    for tile in tiles[:5]:
        assert tile["pixel_format"] == "png"  # small tiles are stored lossless
        expected = image[tile["y"] : tile["y"] + 256 : 2, tile["x"] : tile["x"] + 256 : 2]
        np.testing.assert_array_equal(decode_tile(tile["pixels"]), expected)


def test_resized_when_no_level_matches(store, slide_path):
    store.ingest([slide_path], IngestOptions(**{**OPTIONS, "target_mpp": 1.5, "tile_size": 64}))
    tiles = store.catalog.read("tiles").to_pylist()
    assert {t["level"] for t in tiles} == {1}  # finest level not finer than needed... and never coarser
    assert all(decode_tile(t["pixels"]).shape == (64, 64, 3) for t in tiles[:3])


def test_ingesting_twice_adds_nothing(store, slide_path):
    first = store.ingest([slide_path], IngestOptions(**OPTIONS))
    versions = table_versions(store)
    second = store.ingest([slide_path], IngestOptions(**OPTIONS))
    assert second.tiles_added == 0 and second.tiles_present == first.tiles_added
    assert second.sources_unchanged == 1
    assert table_versions(store) == versions  # not even a new version
    ids = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id").to_pylist()
    assert len(ids) == len(set(ids)) == first.tiles_added


def test_overlap_gives_more_tiles(store, tmp_path, slide_path):
    plain = store.ingest([slide_path], IngestOptions(**OPTIONS)).tiles_added
    overlapped = store.ingest([slide_path], IngestOptions(**{**OPTIONS, "overlap": 64})).tiles_added
    assert overlapped > plain * 2


def test_missing_mpp_is_a_clear_error_and_mpp_overrides(store, tmp_path, slide_pixels):
    path = write_pyramid(tmp_path / "nompp.tif", slide_pixels[0], mpp=None)
    with pytest.raises(SourceError, match=r"nompp\.tif: no µm/px .* pass --mpp"):
        store.ingest([path], IngestOptions(**OPTIONS))
    assert store.info()["tiles"] == 0
    report = store.ingest([path], IngestOptions(mpp=0.5, **OPTIONS))
    assert report.tiles_added > 0
    assert store.catalog.read("sources").to_pylist()[0]["mpp_origin"] == "override"


def test_tile_larger_than_image_and_upsampling_are_refused(store, slide_path):
    with pytest.raises(SourceError, match="larger than the image"):
        store.ingest([slide_path], IngestOptions(**{**OPTIONS, "tile_size": 2048}))
    with pytest.raises(SourceError, match="coarser than --target-mpp"):
        store.ingest([slide_path], IngestOptions(**{**OPTIONS, "target_mpp": 0.25}))
    assert store.info()["tiles"] == 0


def test_plain_image_is_a_one_level_slide(store):
    from PIL import Image
    from skimage import data

    path = store.root.parent / "ihc.png"
    Image.fromarray(data.immunohistochemistry()).save(path)
    report = store.ingest(
        [path], IngestOptions(mpp=0.5, target_mpp=0.5, tile_size=128, min_tissue=0.5, progress=False)
    )
    assert 1 <= report.tiles_added <= 16
    source = store.catalog.read("sources").to_pylist()[0]
    assert (source["width"], source["height"], source["level_count"]) == (512, 512, 1)


def test_corrupt_slide_among_good_ones(store, tmp_path, slide_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide at all" * 100)
    before = table_versions(store)
    with pytest.raises(SourceError, match=r"broken\.svs.*nothing was written"):
        store.ingest([slide_path, bad], IngestOptions(**OPTIONS))
    assert table_versions(store) == before and store.info()["tiles"] == 0

    report = store.ingest([slide_path, bad], IngestOptions(skip_errors=True, **OPTIONS))
    assert report.sources_ok == 1 and report.sources_failed == 1 and report.tiles_added > 0
    info = store.info()
    assert info["sources"]["ok"] == 1 and info["sources"]["failed"] == 1
    assert "broken.svs" in info["sources"]["failures"][0]["uri"]


def test_failure_while_reading_rolls_back(store, tmp_path, slide_path):
    """A source that breaks mid-read (after earlier sources were committed) leaves the store as it was."""
    other = write_pyramid(tmp_path / "other.tif", np.flipud(synthetic_slide()[0]))

    def damaged(source, tile_id):
        if source.name == "other.tif":
            raise SourceError(f"{source}: damaged tile")

    before = {name: store.catalog.read(name).num_rows for name in ("sources", "tiles", "labels", "files")}
    with (
        hooks.inject("ingest.read_tile", damaged),
        pytest.raises(SourceError, match="damaged tile.*left as it was"),
    ):
        store.ingest([slide_path, other], IngestOptions(chunk_tiles=1, **OPTIONS))
    assert {
        name: store.catalog.read(name).num_rows for name in ("sources", "tiles", "labels", "files")
    } == before
    assert store.check().ok
