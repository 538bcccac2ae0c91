"""Heatmaps over a real slide's thumbnail and GeoJSON for QuPath, from a predictions table `pred__<name>`."""

from __future__ import annotations

import colorsys
import json
import shutil
import uuid

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import embedstore
from embedstore import IngestOptions
from embedstore.core.errors import EmbedstoreError
from embedstore.core.schema import key_field
from embedstore.sources.slides import open_slide, thumbnail_rgb
from embedstore.sources.tissue import tissue_mask
from heads.card import CARD, HeadCard, head_dir
from heads.errors import HeadsError
from heads.options import HeatmapOptions
from heads.prediction import predictions_schema
from heads.spatial import (
    OUTLINE,
    THRESHOLD_MARK,
    colour_of,
    export_geojson,
    heatmap,
    opacity_of,
    slide_predictions,
)
from tests.helpers import synthetic_slide, write_pyramid

# A 1024 x 768 px slide (the thumbnail is the slide) cut into 128 px level-0 tiles: small and quick.
SLIDE = dict(height=768, width=1024)
OPTIONS = IngestOptions(target_mpp=1.0, tile_size=64, min_tissue=0.5, progress=False)
BINARY = ["normal", "tumour"]


def write_predictions(
    store, name: str, tile_ids: list[str], probabilities: np.ndarray, classes: list[str], schema=None
):
    """`pred__<name>` as heads.predict writes it: score = p(positive) for binary, else p(predicted).

    Without `schema`, the table has no metadata (no card, no class names): the table alone."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    width = probabilities.shape[1]
    schema = schema or pa.schema(
        [
            key_field("tile_id"),
            pa.field("score", pa.float32()),
            pa.field("probabilities", pa.list_(pa.float32(), width)),
            pa.field("label", pa.string()),
        ]
    )
    if width == 2:
        score, labels = probabilities[:, 1], [classes[int(p >= 0.5)] for p in probabilities[:, 1]]
    else:
        best = probabilities.argmax(axis=1)
        score, labels = probabilities.max(axis=1), [classes[i] for i in best]
    columns = {
        "tile_id": pa.array(tile_ids, pa.string()),
        "score": pa.array(score, pa.float32()),
        "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(probabilities.ravel()), width),
        "label": pa.array(labels, pa.string()),
    }
    if "split" in schema.names:  # a card's schema: the head's split, unknown here
        columns["split"] = pa.nulls(len(tile_ids), pa.string())
    rows = pa.table(columns, schema=schema)
    store.catalog.create_table(f"pred__{name}", schema)
    store.catalog.insert_missing(f"pred__{name}", rows)


def save_card(store, name: str, classes: list[str], threshold: float, created: str) -> HeadCard:
    """A head's card as heads.card writes it (the weights are not needed to draw predictions)."""
    card = HeadCard(
        name=name,
        kind="linear",
        backbone="synthetic.vectors",
        weights_sha256="0" * 64,
        table="emb__synthetic.vectors",
        table_version=1,
        task="tumour",
        classes=classes,
        positive_class=classes[1] if len(classes) == 2 else None,
        threshold=threshold,
        params={},
        augment="",
        validation={},
        group_by="slide",
        tiles_train=0,
        tiles_validation=0,
        created=created,
    )
    head_dir(store, name).mkdir(parents=True)
    (head_dir(store, name) / CARD).write_text(json.dumps(card.to_dict()))
    return card


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return synthetic_slide(**SLIDE)[0]


@pytest.fixture(scope="module")
def slide_store(tmp_path_factory, pixels):
    """A store holding one real ingested slide; returns (store, slide path, tiles as dicts)."""
    root = tmp_path_factory.mktemp("spatial")
    path = write_pyramid(root / "slide.tif", pixels)
    store = embedstore.init(root / "store")
    store.ingest([path], OPTIONS)
    tiles = store.catalog.read(
        "tiles", columns=["tile_id", "source_id", "x", "y", "size0", "tissue_fraction"]
    )
    return store, path, tiles.to_pylist()


@pytest.fixture(scope="module")
def split_head(slide_store):
    """A binary head that scores tiles right of the slide's middle 0.95, left of it 0.05."""
    store, path, tiles = slide_store
    middle = SLIDE["width"] // 2
    p = np.array([0.95 if t["x"] + t["size0"] / 2 > middle else 0.05 for t in tiles])
    write_predictions(store, "split", [t["tile_id"] for t in tiles], np.stack([1 - p, p], 1), BINARY)
    return "split", p


def _thumbnail(path) -> np.ndarray:
    slide = open_slide(path)
    try:
        return thumbnail_rgb(slide)
    finally:
        slide.close()


def test_heatmap_is_the_thumbnail_size_and_colours_each_tile_by_its_score(slide_store, split_head, tmp_path):
    store, path, tiles = slide_store
    name, p = split_head
    out = heatmap(store, name, "slide.tif", tmp_path / "heat.png", classes=BINARY)
    thumb = _thumbnail(path)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (thumb.shape[1], thumb.shape[0])
        picture = np.asarray(image.convert("RGB")).astype(np.float32)
    mask = tissue_mask(thumb)
    scale = thumb.shape[1] / SLIDE["width"]
    errors = {0.05: [], 0.95: []}
    means = {0.05: [], 0.95: []}
    for tile, score in zip(tiles, p, strict=True):
        cx = int((tile["x"] + tile["size0"] / 2) * scale)
        cy = int((tile["y"] + tile["size0"] / 2) * scale)
        if not mask[cy, cx]:
            continue
        weight = opacity_of(score)  # opaque where the score is high, nearly clear where it is low
        expected = (1 - weight) * thumb[cy, cx] + weight * colour_of(score)
        errors[score].append(np.abs(picture[cy, cx] - expected).max())
        means[score].append(picture[cy, cx])
    assert len(errors[0.05]) > 5 and len(errors[0.95]) > 5
    assert np.median(errors[0.05]) <= 2 and np.median(errors[0.95]) <= 2
    high, low = np.mean(means[0.95], axis=0), np.mean(means[0.05], axis=0)
    assert np.abs(high - low).sum() > 100  # yellow over the stain vs a faint blue veil over it
    low_thumb = np.mean(
        [
            thumb[int((t["y"] + t["size0"] / 2) * scale), int((t["x"] + t["size0"] / 2) * scale)]
            for t, s in zip(tiles, p, strict=True)
            if s == 0.05
        ],
        axis=0,
    )
    assert np.abs(low - low_thumb).max() < 25  # low-scoring tissue keeps (nearly) its own colours
    # Glass no tile covers is the thumbnail itself; the panel and outline sit on top of it.
    glass = ~mask
    glass[: thumb.shape[0] // 4] = False  # leave out the legend's corners
    glass[-thumb.shape[0] // 4 :] = False
    assert np.abs(picture[glass] - thumb[glass]).max(axis=1).mean() < 5
    assert ((picture == OUTLINE).all(axis=-1)).sum() > 200  # the tissue outline is drawn


def test_slide_by_source_id_name_or_stem_and_defaults(slide_store, split_head, tmp_path):
    store, _, tiles = slide_store
    name, _ = split_head
    source_id = tiles[0]["source_id"]
    paths = [
        heatmap(store, name, slide, tmp_path / f"{i}.png") for i, slide in enumerate([source_id, "slide"])
    ]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    predictions = slide_predictions(store, name, source_id)
    # without a card or classes, names come from the labels the table predicted
    assert predictions.classes == BINARY and predictions.positive_class == "tumour"
    assert predictions.threshold is None and len(predictions.tile_id) == predictions.n_tiles == len(tiles)
    named = heatmap(store, name, source_id, tmp_path / "negative.png", class_name="normal", alpha=1.0)
    assert named.read_bytes() != paths[0].read_bytes()


def test_several_classes_show_the_first_class_of_interest_by_default(slide_store, tmp_path):
    store, _, tiles = slide_store
    classes = ["background", "tumour", "stroma"]
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1.0, 1.0, 1.0], size=len(tiles))
    write_predictions(store, "three", [t["tile_id"] for t in tiles], probabilities, classes)
    default = heatmap(store, "three", "slide.tif", tmp_path / "default.png", classes=classes)
    tumour = heatmap(
        store, "three", "slide.tif", tmp_path / "tumour.png", class_name="tumour", classes=classes
    )
    stroma = heatmap(
        store, "three", "slide.tif", tmp_path / "stroma.png", class_name="stroma", classes=classes
    )
    assert default.read_bytes() == tumour.read_bytes() != stroma.read_bytes()
    with pytest.raises(HeadsError, match=r"no class 'necrosis'; its classes: background, tumour, stroma"):
        heatmap(store, "three", "slide.tif", tmp_path / "x.png", class_name="necrosis", classes=classes)
    with pytest.raises(
        HeadsError, match="predicts 3 classes but the class names are normal, tumour; pass one"
    ):
        heatmap(store, "three", "slide.tif", tmp_path / "x.png", classes=BINARY)


def test_geojson_is_one_qupath_detection_per_tile(slide_store, split_head, tmp_path):
    store, path, tiles = slide_store
    name, p = split_head
    out = export_geojson(store, name, "slide.tif", tmp_path / "out" / "tiles.geojson", classes=BINARY)

    def refuse(constant):
        raise AssertionError(f"non-JSON number {constant}")

    collection = json.loads(out.read_text(), parse_constant=refuse)
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    by_tile = {t["tile_id"]: (t, score) for t, score in zip(tiles, p, strict=True)}
    assert len(features) == len(tiles) and {f["properties"]["tile_id"] for f in features} == set(by_tile)
    assert len({f["id"] for f in features}) == len(features)
    width, height = open_slide(path).dimensions
    for feature in features:
        uuid.UUID(feature["id"])  # QuPath reads ids as UUIDs
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        (ring,) = feature["geometry"]["coordinates"]
        tile, score = by_tile[feature["properties"]["tile_id"]]
        x, y, s = tile["x"], tile["y"], tile["size0"]
        assert ring == [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]  # closed, level-0 pixels
        assert all(0 <= px <= width and 0 <= py <= height for px, py in ring)
        properties = feature["properties"]
        assert properties["objectType"] == "detection"
        assert properties["classification"]["name"] == ("tumour" if score > 0.5 else "normal")
        assert len(properties["classification"]["color"]) == 3
        measurements = properties["measurements"]
        assert set(measurements) == {"score", "p(normal)", "p(tumour)"}
        assert all(isinstance(v, float) for v in measurements.values())
        assert measurements["score"] == pytest.approx(score, abs=1e-6)
        assert measurements["p(tumour)"] + measurements["p(normal)"] == pytest.approx(1.0, abs=1e-5)


def test_tiles_not_predicted_yet_are_left_out(slide_store, tmp_path):
    store, _, tiles = slide_store
    half = tiles[::2]
    write_predictions(store, "half", [t["tile_id"] for t in half], np.full((len(half), 2), 0.5), BINARY)
    predictions = slide_predictions(store, "half", "slide.tif")
    assert len(predictions.tile_id) == len(half) and predictions.n_tiles == len(tiles)
    out = export_geojson(store, "half", "slide.tif", tmp_path / "half.geojson")
    assert len(json.loads(out.read_text())["features"]) == len(half)
    assert heatmap(store, "half", "slide.tif", tmp_path / "half.png").is_file()


def test_bad_input_names_the_problem_and_the_fix(slide_store, split_head, tmp_path):
    store, _, tiles = slide_store
    name, _ = split_head
    with pytest.raises(HeadsError, match=r"no slide 'other\.svs' in .*; known slides: slide\.tif \("):
        heatmap(store, name, "other.svs", tmp_path / "x.png")
    with pytest.raises(HeadsError, match=r"no head 'absent' in .*; heads: "):
        export_geojson(store, "absent", "slide.tif", tmp_path / "x.geojson")
    save_card(store, "unpredicted", BINARY, 0.5, "2026-01-01T00:00:00.000001")
    with pytest.raises(
        HeadsError,
        match=r"'unpredicted' has no predictions yet; run `embedstore predict .* --head unpredicted`",
    ):
        export_geojson(store, "unpredicted", "slide.tif", tmp_path / "x.geojson")
    with pytest.raises(HeadsError, match=r"--head '\.\./x' must be a non-empty name of at most 100 letters"):
        heatmap(store, "../x", "slide.tif", tmp_path / "x.png")
    with pytest.raises(HeadsError, match=r"give an output path ending in \.png"):
        heatmap(store, name, "slide.tif", tmp_path / "x.jpg")
    # a predictions table that holds none of this slide's tiles
    write_predictions(store, "elsewhere", ["not-a-tile"], np.array([[0.2, 0.8]]), BINARY)
    with pytest.raises(
        HeadsError, match=r"no predictions for the \d+ tiles of slide slide\.tif; run `embedstore"
    ):
        heatmap(store, "elsewhere", "slide.tif", tmp_path / "x.png")


def test_a_slide_without_tiles_and_a_missing_slide_file(tmp_path, pixels):
    store = embedstore.init(tmp_path / "store")
    write_predictions(store, "h", ["t"], np.array([[0.5, 0.5]]), BINARY)
    with pytest.raises(
        HeadsError, match=r"no slide 'slide\.tif' .*; known slides: none \(ingest a slide first"
    ):
        heatmap(store, "h", "slide.tif", tmp_path / "x.png")
    folder = tmp_path / "slides"
    folder.mkdir()
    glass = write_pyramid(folder / "glass.tif", np.full((512, 512, 3), 245, dtype=np.uint8), levels=1)
    path = write_pyramid(folder / "gone.tif", pixels)
    store.ingest([glass, path], OPTIONS)
    with pytest.raises(HeadsError, match=r"slide 'glass' \(glass\.tif\) has no tiles .*: gone\.tif \("):
        heatmap(store, "h", "glass", tmp_path / "x.png")
    ids = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id").to_pylist()
    write_predictions(store, "g", ids, np.tile([[0.3, 0.7]], (len(ids), 1)), BINARY)
    shutil.move(path, tmp_path / "moved.tif")
    with pytest.raises(
        HeadsError, match=r"gone\.tif .* cannot be opened from .*gone\.tif .*restore the file"
    ):
        heatmap(store, "g", "gone.tif", tmp_path / "x.png")
    # the GeoJSON needs only the store
    out = export_geojson(store, "g", "gone", tmp_path / "gone.geojson")
    assert len(json.loads(out.read_text())["features"]) == len(ids)


def test_the_head_card_gives_classes_positive_class_and_threshold(slide_store, tmp_path):
    store, _, tiles = slide_store
    card = save_card(store, "carded", ["benign", "malignant"], 0.3, "2026-01-01T00:00:00.000002")
    p = np.linspace(0.0, 1.0, len(tiles))
    ids = [t["tile_id"] for t in tiles]
    write_predictions(store, "carded", ids, np.stack([1 - p, p], 1), card.classes, predictions_schema(card))
    predictions = slide_predictions(store.root, "carded", "slide")  # a store path works too
    assert predictions.classes == ["benign", "malignant"] and predictions.positive_class == "malignant"
    assert predictions.threshold == 0.3
    heat = heatmap(store, "carded", "slide", tmp_path / "carded.png")
    outline = (np.asarray(Image.open(heat).convert("RGB")) == OUTLINE).all(axis=-1).sum()
    assert outline > 0
    # contour mode draws the card's threshold on the slide, in the colour that marks it on the colour bar
    lines = heatmap(store, "carded", "slide", tmp_path / "lines.png", style="contour")
    white = [
        (np.asarray(Image.open(png).convert("RGB")) == THRESHOLD_MARK).all(axis=-1).sum()
        for png in (heat, lines)
    ]
    assert white[1] > white[0] + 100
    features = json.loads(export_geojson(store, "carded", "slide", tmp_path / "c.geojson").read_text())[
        "features"
    ]
    assert set(features[0]["properties"]["measurements"]) == {"score", "p(benign)", "p(malignant)"}
    # predictions written by an earlier training of the head are refused
    save_card(store, "stale", ["benign", "malignant"], 0.3, "2026-01-01T00:00:00.000003")
    write_predictions(store, "stale", ids, np.stack([1 - p, p], 1), card.classes, predictions_schema(card))
    with pytest.raises(
        HeadsError, match=r"pred__stale holds predictions of an earlier training .*embedstore predict"
    ):
        heatmap(store, "stale", "slide", tmp_path / "stale.png")


def _lightness(rgb: np.ndarray) -> float:
    """CIE L* (0..100) of an sRGB colour given as 0..255 floats."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = float(linear @ [0.2126, 0.7152, 0.0722])
    return 116 * y ** (1 / 3) - 16 if y > 0.008856 else 903.3 * y


def test_colour_map_gets_lighter_with_the_score_and_has_no_stain_colours():
    lightness = [_lightness(colour_of(v)) for v in (0.0, 0.5, 1.0)]
    assert lightness[0] + 15 < lightness[1] < lightness[2] - 15  # equal steps look equal, even in grey
    ramp = colour_of(np.linspace(0, 1, 101))
    steps = np.diff([_lightness(c) for c in ramp])
    assert (steps > 0).all()  # monotone: a higher score is always lighter
    hues = [colorsys.rgb_to_hsv(*(c / 255.0))[0] * 360 for c in ramp]
    assert all(40 <= h <= 235 for h in hues)  # blue..yellow: never the pink or purple of H&E (270..350)


def test_opacity_rises_with_the_score_so_low_scores_leave_the_tissue_visible():
    scores = np.linspace(0, 1, 11)
    opacity = opacity_of(scores, 0.8)
    assert (np.diff(opacity) > 0).all()
    assert opacity[0] <= 0.1 and opacity[-1] == pytest.approx(0.8)


def test_side_by_side_puts_the_plain_thumbnail_left_of_the_heatmap(slide_store, split_head, tmp_path):
    store, path, _ = slide_store
    name, _ = split_head
    single = np.asarray(Image.open(heatmap(store, name, "slide.tif", tmp_path / "one.png", classes=BINARY)))
    out = heatmap(store, name, "slide.tif", tmp_path / "two.png", classes=BINARY, side_by_side=True)
    pair = np.asarray(Image.open(out).convert("RGB"))
    thumb = _thumbnail(path)
    height, width = thumb.shape[:2]
    assert pair.shape == (height, 2 * width, 3)
    seam = 8  # a thin white gap marks the seam
    assert np.abs(pair[:, : width - seam].astype(int) - thumb[:, : width - seam]).max() == 0
    assert np.abs(pair[:, width + seam :].astype(int) - single[:, seam:]).max() == 0


def test_contour_mode_draws_only_outlines(slide_store, split_head, tmp_path):
    store, path, tiles = slide_store
    name, p = split_head
    out = heatmap(store, name, "slide.tif", tmp_path / "contour.png", classes=BINARY, style="contour")
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    thumb = _thumbnail(path).astype(int)
    scale = thumb.shape[1] / SLIDE["width"]
    inside = 0
    for tile in tiles:
        cx = int((tile["x"] + tile["size0"] / 2) * scale)
        cy = int((tile["y"] + tile["size0"] / 2) * scale)
        if thumb.shape[0] // 4 <= cy < 3 * thumb.shape[0] // 4:  # away from the legend's corners
            assert (picture[cy, cx] == thumb[cy, cx]).all()  # inside a region: the thumbnail's own colour
            inside += 1
    assert inside > 5
    changed = (picture != thumb).any(axis=-1)
    changed[: thumb.shape[0] // 4] = changed[-thumb.shape[0] // 4 :] = False
    assert 0.005 < changed.mean() < 0.15  # thin lines, not a veil
    line = np.round(colour_of(0.75)).astype(int)
    assert (np.abs(picture - line).max(axis=-1) <= 1).sum() > 100  # the 0.75 level, in its own colour


def test_heatmap_style_errors_are_one_line(slide_store, split_head, tmp_path):
    store, _, _ = slide_store
    name, _ = split_head
    with pytest.raises(HeadsError, match="style 'dots' is unknown; pass one of fill, contour"):
        heatmap(store, name, "slide.tif", tmp_path / "x.png", style="dots")
    with pytest.raises(EmbedstoreError, match="--style") as error:
        HeatmapOptions(style="dots")
    assert "\n" not in str(error.value)
