"""A head's predictions on one slide: a heatmap PNG over the slide's thumbnail, and GeoJSON for QuPath.

Both read the predictions table `pred__<name>` (written by `embedstore predict`) for the tiles of one slide;
neither needs the backbone's embeddings or the head's weights. The slide is named by its source_id, by its
name as stored in the tiles (`slide` group, the file name), or by that name without its extension. Class
names, positive class and threshold come from the head's card when the head has one (`heads.card.read_card`);
the `classes` argument overrides the names; without a card, names come from the table's metadata (written by
`heads.predict`) or else from the table itself (each probability column named after the label most often
predicted where it is the largest; `class <i>` when that is ambiguous).

The heatmap is exactly the size of the thumbnail that ingest and `embedstore preview` compute
(`embedstore.sources.slides.thumbnail_rgb`, longest side 2048 px), so it lines up with the slide (with
`side_by_side`, the plain thumbnail sits left of it: twice as wide). To keep that size, its colour bar and
legend are drawn inside the image, in a white panel placed in the corner that hides the least tissue, with
text a fixed share of the image height (`embedstore.sources.legend_text_px`).

Colours: the upper three quarters of viridis (blue, teal, green, yellow; `colour_of`). Viridis is
perceptually uniform (lightness rises steadily, so equal score steps look equal, also in greyscale and to
colour-blind readers); its lowest quarter is a dark purple like haematoxylin and is left out, so no score
takes an H&E pink or purple. Opacity rises with the score (`opacity_of`): low-scoring tissue shows through
almost untouched, high scores cover it. `style="contour"` draws only the outlines of score levels (and the
threshold, thicker) and leaves every other pixel as the thumbnail shows it.
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from embedstore.core.errors import EmbedstoreError
from embedstore.core.schema import SOURCES, TILES, sql_string
from embedstore.core.validation import output_file
from embedstore.sources import (
    border,
    legend_font,
    legend_text_px,
    line_px,
    open_slide,
    thumbnail_rgb,
    tissue_mask,
)
from embedstore.storage.catalog import Catalog

from .card import HeadCard, StoreArg, check_name, head_exists, open_store, read_card
from .errors import HeadsError
from .options import HEATMAP_DEFAULTS, HEATMAP_STYLES
from .prediction import CLASSES_KEY, CREATED_KEY, predictions_table

CMAP = "viridis"  # perceptually uniform, readable in greyscale and by colour-blind readers
CMAP_RANGE = (0.25, 1.0)  # the part of CMAP used: blue to yellow, without its haematoxylin-like purple
OPACITY_FLOOR = 0.1  # opacity at score 0, as a share of the opacity at score 1 (tiles stay visible)
OPACITY_POWER = 1.5  # opacity rises with score**1.5: middling scores tint lightly, high scores stand out
CONTOUR_LEVELS = (0.25, 0.5, 0.75)  # scores outlined by style="contour" (and the threshold)
THRESHOLD_MARK = (255, 255, 255)  # the threshold on the colour bar and, in contour mode, on the slide
OUTLINE = (40, 40, 40)  # tissue outline: dark grey, unlike the colour map and the stain
GLASS_WEIGHT = 0.4  # tile pixels off tissue are blended this much less than tissue
# Class names a default heatmap of a multi-class head skips, to show the first class of interest.
BACKGROUND_NAMES = frozenset(
    {"background", "bg", "normal", "negative", "neg", "benign", "other", "none", "healthy"}
)
# Classification colours in the GeoJSON (QuPath draws detections in their class's colour): tab10.
PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
# Namespace of the features' UUIDs: uuid5(namespace, "<head>:<tile_id>"), stable across exports.
FEATURE_NAMESPACE = uuid.UUID("6f1d3a52-9c57-4c1e-9d1b-3f3c5a0e7b21")
_KNOWN_SHOWN = 5


@dataclass(frozen=True)
class SlidePredictions:
    """One head's predictions for the tiles of one slide, in tile order.

    `x`, `y`, `size0` are level-0 pixels; `probabilities` is (n, C) in `classes` order; `n_tiles` counts
    the slide's tiles, predicted or not (predict is incremental: tiles ingested later have none yet).
    """

    head: str
    source_id: str
    slide: str  # the slide's name (file name), for captions
    uri: str
    width: int
    height: int
    tile_id: list[str]
    x: np.ndarray
    y: np.ndarray
    size0: np.ndarray
    score: np.ndarray
    probabilities: np.ndarray
    label: list[str]
    classes: list[str]
    positive_class: str | None
    threshold: float | None
    n_tiles: int


def slide_predictions(
    store: StoreArg, name: str, slide: str, classes: list[str] | None = None
) -> SlidePredictions:
    """The predictions of head `name` for the tiles of `slide` (`store`: a Store or its path); HeadsError
    on an unknown head or slide, a slide without tiles, or no (or outdated) predictions."""
    store = open_store(store)
    check_name(name, "--head")
    table = predictions_table(name)
    card = read_card(store, name) if head_exists(store, name) else None
    predict = f"`embedstore predict {store.root} --head {name}`"
    if not store.has_table(table):
        if card is None:
            read_card(store, name)  # raises: no head of that name, naming the heads there are
        raise HeadsError(f"head {name!r} has no predictions yet; run {predict} first")
    metadata = store.dataset(table).schema.metadata or {}
    if card is not None and metadata.get(CREATED_KEY, b"").decode() != card.created:
        raise HeadsError(f"{table} holds predictions of an earlier training of head {name!r}; run {predict}")
    source = _resolve_slide(store, slide)
    tiles = store.read(
        TILES, columns=["tile_id", "x", "y", "size0"], filter=f"source_id = {sql_string(source['source_id'])}"
    )
    shown = _slide_name(source)
    if tiles.num_rows == 0:
        raise HeadsError(
            f"slide {slide!r} ({shown}) has no tiles in the store; known slides with tiles: "
            f"{_known_slides(store)}"
        )
    predicted = _predictions_for(store.dataset(table), tiles.column("tile_id"))
    if predicted.num_rows == 0:
        raise HeadsError(
            f"head {name!r} has no predictions for the {tiles.num_rows} tiles of slide {shown}; run "
            f"{predict} (it predicts tiles embedded since)"
        )
    # Keep the slide's tile order; tiles without a prediction drop out.
    where = pc.index_in(tiles.column("tile_id"), value_set=predicted.column("tile_id"))
    has = pc.is_valid(where)
    rows = where.filter(has).to_numpy().astype(np.int64)
    kept = tiles.filter(has)
    probabilities = _matrix(predicted.column("probabilities"))[rows]
    labels = pc.take(predicted.column("label"), pa.array(rows)).to_pylist()
    facts = _head_facts(name, card, metadata, probabilities, labels, classes)
    return SlidePredictions(
        head=name,
        source_id=source["source_id"],
        slide=shown,
        uri=source["uri"],
        width=int(source["width"] or 0),
        height=int(source["height"] or 0),
        tile_id=kept.column("tile_id").to_pylist(),
        x=kept.column("x").to_numpy().astype(np.int64),
        y=kept.column("y").to_numpy().astype(np.int64),
        size0=kept.column("size0").to_numpy().astype(np.int64),
        score=predicted.column("score").to_numpy(zero_copy_only=False).astype(np.float32)[rows],
        probabilities=probabilities,
        label=labels,
        classes=facts[0],
        positive_class=facts[1],
        threshold=facts[2],
        n_tiles=tiles.num_rows,
    )


def heat_class(predictions: SlidePredictions, class_name: str | None = None) -> str:
    """The class a heatmap shows: `class_name`; by default the positive class of a binary head, else the
    first class not named like background (`BACKGROUND_NAMES`), else the first class."""
    classes = predictions.classes
    if class_name is not None:
        if class_name not in classes:
            raise HeadsError(
                f"head {predictions.head!r} has no class {class_name!r}; its classes: {', '.join(classes)}"
            )
        return class_name
    if predictions.positive_class is not None:
        return predictions.positive_class
    return next((c for c in classes if c.lower() not in BACKGROUND_NAMES), classes[0])


def heatmap(
    store: StoreArg,
    name: str,
    slide: str,
    out: str | Path,
    class_name: str | None = HEATMAP_DEFAULTS["class_name"],
    alpha: float = HEATMAP_DEFAULTS["alpha"],
    classes: list[str] | None = None,
    style: str = HEATMAP_DEFAULTS["style"],
    side_by_side: bool = HEATMAP_DEFAULTS["side_by_side"],
) -> Path:
    """Write a PNG of head `name`'s probability of `class_name` (see `heat_class`) on each tile of `slide`
    over the thumbnail: tiles coloured by `colour_of`, `alpha` opaque at score 1 and less below
    (`opacity_of`), or with `style="contour"` only the outlines of CONTOUR_LEVELS and the threshold. The
    tissue is outlined; a corner panel holds the colour bar, the head, the class and the threshold. The PNG
    is the thumbnail's size, or twice as wide with `side_by_side` (plain thumbnail on the left)."""
    out = output_file("--out", out)
    if out.suffix.lower() != ".png":
        raise HeadsError(f"{out}: the heatmap is a PNG; give an output path ending in .png")
    if not 0.0 <= alpha <= 1.0:
        raise HeadsError(f"alpha {alpha} is outside 0..1; pass a blend weight such as 0.5")
    if style not in HEATMAP_STYLES:
        raise HeadsError(f"style {style!r} is unknown; pass one of {', '.join(HEATMAP_STYLES)}")
    predictions = slide_predictions(store, name, slide, classes)
    shown = heat_class(predictions, class_name)
    values = predictions.probabilities[:, predictions.classes.index(shown)]
    thumb, (width, height) = _thumbnail(predictions)
    mask = tissue_mask(thumb)
    heat, covered = _rasterise(predictions, values, thumb.shape[:2], (width, height))
    threshold = predictions.threshold if shown == predictions.positive_class else None
    if style == "contour":
        picture = thumb.astype(np.float32)
        _contours(picture, heat, covered, threshold)
    else:
        picture = _blend(thumb, heat, covered, mask, alpha)
    picture[border(mask, line_px(mask.shape))] = OUTLINE
    lines = _legend_lines(predictions, shown, len(values), style)
    image = _panel(picture, covered | mask, lines, threshold)
    if side_by_side:
        image = _beside(Image.fromarray(thumb), image)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG")
    return out


def colour_of(values: np.ndarray | float) -> np.ndarray:
    """The heatmap's RGB colours (..., 3), floats 0..255, of scores in 0..1: CMAP over CMAP_RANGE."""
    from matplotlib import colormaps

    low, high = CMAP_RANGE
    scaled = low + (high - low) * np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return np.asarray(colormaps[CMAP](scaled))[..., :3] * 255.0


def opacity_of(values: np.ndarray | float, alpha: float = HEATMAP_DEFAULTS["alpha"]) -> np.ndarray:
    """How opaque a score's colour is drawn: `alpha` at 1, falling with score**OPACITY_POWER to
    OPACITY_FLOOR * alpha at 0 (a veil over middling scores would hide the stain where it matters least)."""
    scores = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return alpha * (OPACITY_FLOOR + (1.0 - OPACITY_FLOOR) * scores**OPACITY_POWER)


def export_geojson(
    store: StoreArg, name: str, slide: str, out: str | Path, classes: list[str] | None = None
) -> Path:
    """Write a GeoJSON FeatureCollection of head `name`'s predictions on `slide`, as QuPath imports it
    (File > Import objects from file): one detection per predicted tile, a square Polygon in level-0 pixel
    coordinates, classified as the predicted label, measurements `score` and `p(<class>)` per class."""
    out = output_file("--export-geojson", out)
    predictions = slide_predictions(store, name, slide, classes)
    colours = {c: list(PALETTE[i % len(PALETTE)]) for i, c in enumerate(predictions.classes)}
    keys = [f"p({c})" for c in predictions.classes]
    features = []
    for i, tile_id in enumerate(predictions.tile_id):
        x, y, side = int(predictions.x[i]), int(predictions.y[i]), int(predictions.size0[i])
        ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
        label = predictions.label[i]
        measurements = {"score": _number(predictions.score[i])}
        measurements.update(zip(keys, (_number(p) for p in predictions.probabilities[i]), strict=True))
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(FEATURE_NAMESPACE, f"{name}:{tile_id}")),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": label, "color": colours.get(label, [128, 128, 128])},
                    "measurements": measurements,
                    "tile_id": tile_id,
                },
            }
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"type": "FeatureCollection", "features": features}, handle, allow_nan=False)
    return out


# -- finding the slide and its predictions ------------------------------------------------------------------


def _resolve_slide(store: Catalog, slide: str) -> dict[str, Any]:
    """The sources row of `slide`: a source_id, the tiles' `slide` name, or a file name with or without
    its extension."""
    sources = store.read(
        SOURCES, columns=["source_id", "uri", "kind", "width", "height", "status", "n_tiles"]
    )
    rows = sources.to_pylist()
    by_id = {row["source_id"]: row for row in rows}
    if slide in by_id:
        return by_id[slide]
    ids = sorted(
        {r["source_id"] for r in rows if r["uri"] and slide in (Path(r["uri"]).name, Path(r["uri"]).stem)}
    )
    if not ids:
        named = store.read(TILES, columns=["source_id"], filter=f"slide = {sql_string(slide)}")
        ids = sorted(set(named.column("source_id").to_pylist()) & set(by_id))
    if len(ids) > 1:
        raise HeadsError(
            f"{len(ids)} slides are named {slide!r} ({', '.join(ids[:_KNOWN_SHOWN])}); pass the source_id"
        )
    if not ids:
        raise HeadsError(f"no slide {slide!r} in {store.root}; known slides: {_known_slides(store, rows)}")
    return by_id[ids[0]]


def _slide_name(source: dict[str, Any]) -> str:
    return Path(source["uri"]).name if source.get("uri") else source["source_id"]


def _known_slides(store: Catalog, rows: list[dict[str, Any]] | None = None) -> str:
    """A few slides with tiles, as `name (source_id)`, or a hint when there are none."""
    if rows is None:
        rows = store.read(SOURCES, columns=["source_id", "uri", "kind", "status", "n_tiles"]).to_pylist()
    slides = sorted(
        (_slide_name(r), r["source_id"])
        for r in rows
        if r["kind"] in ("slide", "points") and r["status"] == "ok" and (r["n_tiles"] or 0) > 0
    )
    if not slides:
        return "none (ingest a slide first: `embedstore ingest STORE SLIDE`)"
    shown = ", ".join(f"{n} ({s})" for n, s in slides[:_KNOWN_SHOWN])
    return shown + (f" and {len(slides) - _KNOWN_SHOWN} more" if len(slides) > _KNOWN_SHOWN else "")


def _predictions_for(dataset: Any, tile_ids: pa.ChunkedArray) -> pa.Table:
    """The predictions rows of these tiles, read batch by batch (the table may hold every slide's tiles)."""
    wanted = pa.array(tile_ids.to_pylist(), type=pa.string())
    columns = ["tile_id", "score", "probabilities", "label"]
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise HeadsError(
            f"predictions table {Path(dataset.uri).name} lacks {', '.join(missing)}; re-run `embedstore "
            "predict` for this head"
        )
    parts = []
    for batch in dataset.to_batches(columns=columns):
        keep = pc.is_in(batch.column("tile_id"), value_set=wanted)
        if pc.any(keep).as_py():
            parts.append(batch.filter(keep))
    schema = pa.schema([dataset.schema.field(c) for c in columns])
    return pa.Table.from_batches(parts, schema=schema)


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    """A fixed_size_list<float> column as an (n, C) float32 array."""
    array = column.combine_chunks()
    width = array.type.list_size
    return np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)


def _head_facts(
    name: str,
    card: HeadCard | None,
    metadata: dict[bytes, bytes],
    probabilities: np.ndarray,
    labels: list[str],
    classes: list[str] | None,
) -> tuple[list[str], str | None, float | None]:
    """(classes, positive class, threshold): names from `classes`, the card, the table's metadata or its
    labels; positive class and threshold from the card (binary without a card: the second class)."""
    width = probabilities.shape[1]
    if classes is None and card is not None:
        classes = list(card.classes)
    if classes is None and CLASSES_KEY in metadata:
        with contextlib.suppress(ValueError, TypeError):
            classes = list(json.loads(metadata[CLASSES_KEY]))
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != width or len(set(classes)) != width:
            raise HeadsError(
                f"head {name!r} predicts {width} classes but the class names are {', '.join(classes)}; "
                "pass one distinct name per probability column"
            )
    else:
        classes = _classes_from_table(probabilities, labels)
    if card is not None:
        positive = getattr(card, "positive_class", None)
        threshold = getattr(card, "threshold", None)
    else:
        positive, threshold = None, None
    if positive is None and width == 2:
        positive = classes[1]  # heads order binary classes so that the second is the positive one
    if width != 2:
        positive = None
    return classes, positive, None if threshold is None else float(threshold)


def _classes_from_table(probabilities: np.ndarray, labels: list[str]) -> list[str]:
    """Names for the probability columns: the label most often predicted where a column is the largest."""
    width = probabilities.shape[1]
    best = probabilities.argmax(axis=1)
    names = []
    for i in range(width):
        seen = Counter(label for label, b in zip(labels, best, strict=True) if b == i and label is not None)
        names.append(seen.most_common(1)[0][0] if seen else None)
    if None in names or len(set(names)) != width:
        return [f"class {i}" for i in range(width)]
    return [str(n) for n in names]


def _number(value: float) -> float:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else 0.0


# -- drawing -------------------------------------------------------------------------------------------------


def _thumbnail(predictions: SlidePredictions) -> tuple[np.ndarray, tuple[int, int]]:
    """The slide's thumbnail (as ingest computed it) and the slide's level-0 size."""
    try:
        handle = open_slide(Path(predictions.uri))
    except EmbedstoreError as error:
        raise HeadsError(
            f"slide {predictions.slide} ({predictions.source_id}) cannot be opened from {predictions.uri} "
            f"({str(error).removeprefix(predictions.uri + ': ')}); restore the file there or re-ingest it"
        ) from None
    try:
        width, height = handle.dimensions
        return thumbnail_rgb(handle), (int(width), int(height))
    finally:
        handle.close()


def _rasterise(
    predictions: SlidePredictions, values: np.ndarray, shape: tuple[int, int], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per thumbnail pixel, the mean value of the tiles covering it, and which pixels any tile covers."""
    height, width = shape
    sx, sy = width / size[0], height / size[1]
    total = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.int32)
    x0 = np.clip(np.round(predictions.x * sx).astype(np.int64), 0, width)
    y0 = np.clip(np.round(predictions.y * sy).astype(np.int64), 0, height)
    x1 = np.clip(
        np.maximum(np.round((predictions.x + predictions.size0) * sx), x0 + 1).astype(np.int64), 0, width
    )
    y1 = np.clip(
        np.maximum(np.round((predictions.y + predictions.size0) * sy), y0 + 1).astype(np.int64), 0, height
    )
    for a, b, c, d, v in zip(x0, y0, x1, y1, values, strict=True):
        total[b:d, a:c] += float(v)
        count[b:d, a:c] += 1
    covered = count > 0
    heat = np.zeros(shape, dtype=np.float64)
    heat[covered] = total[covered] / count[covered]
    return np.clip(heat, 0.0, 1.0), covered


def _blend(
    thumb: np.ndarray, heat: np.ndarray, covered: np.ndarray, mask: np.ndarray, alpha: float
) -> np.ndarray:
    picture = thumb.astype(np.float32)
    scores = heat[covered]
    weight = opacity_of(scores, alpha) * np.where(mask[covered], 1.0, GLASS_WEIGHT)
    weight = weight[:, None]
    picture[covered] = (1.0 - weight) * picture[covered] + weight * colour_of(scores)
    return picture


def _contours(picture: np.ndarray, heat: np.ndarray, covered: np.ndarray, threshold: float | None) -> None:
    """Outline where the score reaches each of CONTOUR_LEVELS, each line in its level's colour, and the
    threshold in THRESHOLD_MARK, twice as thick; all on a dark edge. Every other pixel is left as it is."""
    width = line_px(heat.shape)
    levels = [(level, width, colour_of(level)) for level in CONTOUR_LEVELS]
    if threshold is not None and 0.0 < threshold < 1.0:
        levels.append((threshold, 2 * width, np.array(THRESHOLD_MARK, dtype=np.float64)))
    for level, thickness, colour in sorted(levels, key=lambda item: item[0]):  # higher levels on top
        region = covered & (heat >= level)
        if not region.any():
            continue
        picture[border(region, thickness + 1)] = (20, 20, 20)  # a dark edge: light lines read on glass
        picture[border(region, thickness)] = colour


def _beside(left: Image.Image, right: Image.Image) -> Image.Image:
    """`left` and `right` (the same size) side by side, a thin white gap drawn over their seam."""
    canvas = Image.new("RGB", (left.width + right.width, right.height), "white")
    canvas.paste(left.resize(right.size) if left.size != right.size else left, (0, 0))
    canvas.paste(right, (left.width, 0))
    gap = max(1, line_px((right.height, right.width)))
    ImageDraw.Draw(canvas).rectangle((left.width - gap, 0, left.width + gap - 1, right.height), fill="white")
    return canvas


def _legend_lines(predictions: SlidePredictions, shown: str, n: int, style: str = "fill") -> list[str]:
    lines = [f"{predictions.head}: p({shown})"]
    if predictions.threshold is not None and shown == predictions.positive_class:
        mark = "white line" if style == "contour" else "white mark"
        lines.append(f"threshold {predictions.threshold:.3g} ({mark})")
    elif len(predictions.classes) == 2:
        lines.append("threshold unknown (no head card)")
    else:
        lines.append("no threshold (most probable class)")
    tiles = f"{n} tiles" if n == predictions.n_tiles else f"{n} of {predictions.n_tiles} tiles"
    lines.append(f"{tiles}; dark line: tissue")
    if style == "contour":
        lines.append("coloured lines: p = " + ", ".join(f"{level:g}" for level in CONTOUR_LEVELS))
    return lines


def _panel(picture: np.ndarray, busy: np.ndarray, lines: list[str], threshold: float | None) -> Image.Image:
    """The picture with a white corner panel: legend lines, then a 0..1 colour bar (threshold marked).
    Text is `legend_text_px` of the image height; the panel grows with it."""
    height, width = busy.shape
    size = legend_text_px(height, width)
    font = legend_font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, step = size // 2 + 2, round(size * 1.3)
    text_width = max(measure.textlength(line, font=font) for line in lines)
    panel_w = min(width, int(max(text_width, 10 * size)) + 2 * pad)
    bar_h = size
    panel_h = min(height, pad + step * len(lines) + bar_h + 4 + step + pad)
    left, top = _quiet_corner(busy, panel_w, panel_h)
    box = picture[top : top + panel_h, left : left + panel_w]
    box[:] = 0.1 * box + 0.9 * 255.0
    image = Image.fromarray(np.clip(picture, 0, 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((left + pad, top + pad + i * step), line, fill=(0, 0, 0), font=font)
    bar_top = top + pad + step * len(lines)
    bar_w = max(1, panel_w - 2 * pad)
    ramp = colour_of(np.linspace(0.0, 1.0, bar_w))
    bar = np.repeat(ramp[None, :, :], bar_h, axis=0).round().astype(np.uint8)
    image.paste(Image.fromarray(bar), (left + pad, bar_top))
    edge = max(1, size // 12)
    draw.rectangle(
        (left + pad - edge, bar_top - edge, left + pad + bar_w + edge - 1, bar_top + bar_h + edge - 1),
        outline=(0, 0, 0),
        width=edge,
    )
    if threshold is not None and 0.0 <= threshold <= 1.0:
        tx = left + pad + round(threshold * (bar_w - 1))
        mark = max(2, size // 6)
        draw.line((tx, bar_top - 3, tx, bar_top + bar_h + 2), fill=(0, 0, 0), width=mark + 2)
        draw.line((tx, bar_top - 3, tx, bar_top + bar_h + 2), fill=THRESHOLD_MARK, width=mark)
    ticks_y = bar_top + bar_h + 3
    for value, anchor in ((0.0, "la"), (0.5, "ma"), (1.0, "ra")):
        tx = left + pad + round(value * (bar_w - 1))
        draw.text((tx, ticks_y), f"{value:g}", fill=(0, 0, 0), font=font, anchor=anchor)
    return image


def _quiet_corner(busy: np.ndarray, panel_w: int, panel_h: int) -> tuple[int, int]:
    """Top-left of the corner panel covering the fewest tissue or tile pixels (top-right on ties)."""
    height, width = busy.shape
    corners = [
        (width - panel_w, 0),
        (0, 0),
        (width - panel_w, height - panel_h),
        (0, height - panel_h),
    ]
    return min(corners, key=lambda c: int(busy[c[1] : c[1] + panel_h, c[0] : c[0] + panel_w].sum()))
