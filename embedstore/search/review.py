"""The review page of a search: one self-contained HTML file where a person marks the candidates
positive / negative / unsure and downloads them as a labels CSV for `embedstore labels import`."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shlex
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import polars as pl
from PIL import Image

from ..core.errors import EmbedstoreError, a_few
from ..core.schema import SOURCES, TILES, sql_string
from ..core.validation import FileName, check_value
from ..sources.tile_pixels import TILE_COLUMNS, TilePixels
from ..storage.catalog import Catalog

HIT_COLUMNS = ("tile_id", "score", "rank")
LOSSLESS_MAX_SIDE = 96  # thumbnails up to this side are PNG, larger ones JPEG


def write_review_page(
    catalog: Catalog,
    hits: pl.DataFrame,
    path: Path,
    *,
    query_tile_ids: Sequence[str] = (),
    query_images: Sequence[tuple[str, np.ndarray]] = (),
    task: str = "review",
    title: str = "embedstore review",
    thumbnail_px: int = 160,
    negative_tile_ids: Sequence[str] = (),
    warning: str | None = None,
) -> Path:
    """Write the review page of `hits` (tile_id, score, rank; optional source_id, slide, x, y, dataset)
    to `path`, with thumbnails from the stored pixels; the queries (positives, then the negatives the
    search used) are shown first, each named by its file, with the query check's `warning` if any.
    Returns `path`."""
    check_value("--review-task", task, FileName())
    missing = [c for c in HIT_COLUMNS if c not in hits.columns]
    if missing:
        raise EmbedstoreError(f"hits lack column(s) {', '.join(missing)} (has: {', '.join(hits.columns)})")
    if thumbnail_px < 16:
        raise EmbedstoreError(f"thumbnail_px must be at least 16, got {thumbnail_px}")
    rows = hits.sort("rank", nulls_last=True).to_dicts()
    asked = [str(r["tile_id"]) for r in rows] + [str(t) for t in [*query_tile_ids, *negative_tile_ids]]
    tiles = _tile_rows(catalog, asked)
    thumbs = _thumbnails(catalog, tiles, thumbnail_px)
    files = _file_names(catalog, tiles)
    queries = [(files[str(t)], thumbs[str(t)]) for t in query_tile_ids]
    queries += [(name, _data_uri(_rgb(name, array), thumbnail_px)) for name, array in query_images]
    negatives = [(files[str(t)], thumbs[str(t)]) for t in negative_tile_ids]
    cards = [_card(i, row, tiles[str(row["tile_id"])], thumbs, files) for i, row in enumerate(rows)]
    page = _page(catalog, title, task, queries, negatives, cards, thumbnail_px, warning)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(page, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _tile_rows(catalog: Catalog, tile_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The tiles' rows (TILE_COLUMNS + slide, dataset) by id; EmbedstoreError naming any not in the store."""
    wanted = list(dict.fromkeys(tile_ids))
    if not wanted:
        return {}
    predicate = f"tile_id IN ({', '.join(sql_string(t) for t in wanted)})"
    table = catalog.read(TILES, columns=[*TILE_COLUMNS, "slide", "image", "dataset"], filter=predicate)
    found = {row["tile_id"]: row for row in table.to_pylist()}
    unknown = [t for t in wanted if t not in found]
    if unknown:
        shown = a_few(unknown)
        raise EmbedstoreError(
            f"{len(unknown)} tile(s) to review are not in the store {catalog.root} ({shown}); "
            "search this store, or ingest them first"
        )
    return found


def _file_names(catalog: Catalog, tiles: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each tile's file name: its image file (tiles ingested from images), else its source's file (the
    slide), else its tile id."""
    sources = sorted({t["source_id"] for t in tiles.values() if not t.get("image") and t["source_id"]})
    uris: dict[str, str] = {}
    if sources:
        predicate = f"source_id IN ({', '.join(sql_string(s) for s in sources)})"
        table = catalog.read(SOURCES, columns=["source_id", "uri"], filter=predicate).to_pylist()
        uris = {row["source_id"]: row["uri"] for row in table if row["uri"]}
    names = {}
    for tile_id, tile in tiles.items():
        path = tile.get("image") or uris.get(tile["source_id"])
        names[tile_id] = PurePath(path).name if path else tile_id
    return names


def _thumbnails(catalog: Catalog, tiles: dict[str, dict[str, Any]], side: int) -> dict[str, str]:
    """A data URI per tile id, from the stored pixels (or the source, for tiles stored without them)."""
    sources: dict[str, tuple[str, str]] = {}
    if any(tile["pixels"] is None for tile in tiles.values()):
        table = catalog.read(SOURCES, columns=["source_id", "uri", "kind"]).to_pylist()
        sources = {row["source_id"]: (row["uri"], row["kind"]) for row in table}
    pixels = TilePixels(sources)
    try:
        return {tile_id: _data_uri(pixels.rgb(tile), side) for tile_id, tile in tiles.items()}
    finally:
        pixels.close()


def _rgb(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise EmbedstoreError(
            f"query image {name}: expected an (H, W, 3) uint8 array, got {array.dtype} {array.shape}"
        )
    return array


def _data_uri(rgb: np.ndarray, side: int) -> str:
    """The image shrunk to `side` on its long side (never enlarged), as a PNG or JPEG data URI."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    kind = "png" if max(image.size) <= LOSSLESS_MAX_SIDE else "jpeg"
    image.save(buffer, format="PNG" if kind == "png" else "JPEG", quality=85)
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _card(
    index: int, hit: dict[str, Any], tile: dict[str, Any], thumbs: dict[str, str], files: dict[str, str]
) -> str:
    """One candidate: thumbnail, rank, score, file name, slide and position, tile id and the mark buttons."""

    def meta(key: str) -> Any:
        value = hit.get(key)
        return tile.get(key) if value is None else value

    tile_id = str(hit["tile_id"])
    rank = hit["rank"] if hit["rank"] is not None else index + 1
    score = "–" if hit["score"] is None else f"{float(hit['score']):.3f}"
    slide = meta("slide")
    x, y = meta("x"), meta("y")
    position = "–" if x is None or y is None else f"{x},{y}"
    dataset = meta("dataset")
    esc = html.escape
    file_name = files[tile_id]
    where = f"{esc(str(slide))} · " if slide and slide != file_name else ""
    return (
        f'<div class="card" tabindex="0" data-tile-id="{esc(tile_id)}" data-index="{index}">'
        f'<img class="thumb" src="{thumbs[tile_id]}" alt="tile {esc(tile_id)}">'
        f'<div class="line"><b>#{esc(str(rank))}</b> <span class="score">{score}</span></div>'
        f'<div class="line file" title="{esc(file_name)}">{esc(file_name)}</div>'
        f'<div class="line">{where}x,y {esc(position)}{f" · {esc(str(dataset))}" if dataset else ""}</div>'
        f'<div class="tid">{esc(tile_id)}</div>'
        '<div class="marks"><button data-mark="positive" title="p">+</button>'
        '<button data-mark="negative" title="n">−</button>'
        '<button data-mark="unsure" title="u">?</button></div></div>'
    )


def _page(
    catalog: Catalog,
    title: str,
    task: str,
    queries: list[tuple[str, str]],
    negatives: list[tuple[str, str]],
    cards: list[str],
    side: int,
    warning: str | None = None,
) -> str:
    esc = html.escape
    file_name = f"{task}-review.csv"
    command = (
        f"embedstore labels import {shlex.quote(str(catalog.root))} --task {shlex.quote(task)} {file_name}"
    )

    def figures(images: list[tuple[str, str]]) -> str:
        return "".join(
            f'<figure class="query"><img class="thumb" src="{uri}" alt="{esc(name)}">'
            f"<figcaption>{esc(name)}</figcaption></figure>"
            for name, uri in images
        )

    if negatives:
        negatives_html = (
            f"<h2>Negatives: {len(negatives)} (candidates like these were pushed down)</h2>"
            f'<div class="queries negatives">{figures(negatives)}</div>'
        )
    else:
        negatives_html = '<p class="help">No negatives were used.</p>' if queries else ""
    config = json.dumps({"task": task, "file": file_name, "key": f"embedstore-review:{title}:{task}"})
    body = {
        "__TITLE__": esc(title),
        "__TASK__": esc(task),
        "__SIDE__": str(side),
        "__QUERIES__": (
            f'<h2>Queries: {len(queries)} positive(s)</h2><div class="queries">{figures(queries)}</div>'
            if queries
            else ""
        )
        + (f'<p class="warning">Query check: {esc(warning)}</p>' if warning else "")
        + negatives_html,
        "__CARDS__": "".join(cards)
        or '<p id="empty">No candidates: the search returned no tiles to review.</p>',
        "__COUNT__": str(len(cards)),
        "__COMMAND__": esc(command),
        "__CONFIG__": config.replace("<", "\\u003c"),
    }
    return re.sub("|".join(body), lambda match: body[match.group(0)], _TEMPLATE)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; background: #fafafa; }
header { position: sticky; top: 0; background: #fafafa; padding: .6em 0; border-bottom: 1px solid #ddd;
  z-index: 1; }
h1 { font-size: 1.3em; margin: .2em 0; } h2 { font-size: 1.05em; margin: 1em 0 .4em; }
code { background: #eee; padding: 1px 4px; border-radius: 3px; }
.counts span { margin-right: 1em; } .help { color: #666; font-size: .9em; }
.queries, .grid { display: flex; flex-wrap: wrap; gap: 10px; }
.query { margin: 0; text-align: center; font-size: .8em; color: #555; max-width: __SIDE__px;
  word-break: break-all; }
.warning { color: #92400e; background: #fef3c7; padding: .4em .6em; border-radius: 4px; }
.negatives .thumb { outline: 3px solid #dc2626; }
.thumb { width: __SIDE__px; height: __SIDE__px; object-fit: contain; background: #fff; display: block; }
.card { width: __SIDE__px; padding: 6px; border: 3px solid #ccc; border-radius: 6px; background: #fff;
  outline: none; }
.card:focus { box-shadow: 0 0 0 3px #3b82f6; }
.card.positive { border-color: #16a34a; background: #dcfce7; }
.card.negative { border-color: #dc2626; background: #fee2e2; }
.card.unsure { border-color: #ca8a04; background: #fef9c3; }
.line { font-size: .85em; margin-top: 2px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.tid { font-size: .7em; color: #888; word-break: break-all; margin-top: 2px; }
.marks { display: flex; gap: 4px; margin-top: 4px; }
.marks button { flex: 1; cursor: pointer; border: 1px solid #bbb; background: #f4f4f4; border-radius: 4px; }
.marks button.on[data-mark=positive] { background: #16a34a; color: #fff; }
.marks button.on[data-mark=negative] { background: #dc2626; color: #fff; }
.marks button.on[data-mark=unsure] { background: #ca8a04; color: #fff; }
#download { font-size: 1em; padding: .3em .8em; cursor: pointer; }
</style></head>
<body>
<header>
<h1>__TITLE__</h1>
<div class="counts">task <b>__TASK__</b> · __COUNT__ candidate(s) ·
<span>positive <b id="count-positive">0</b></span><span>negative <b id="count-negative">0</b></span>
<span>unsure <b id="count-unsure">0</b></span>
<button id="download">Download labels CSV</button></div>
<div class="help">Click + / − / ? on a card, or move with ← → (or j k) and press p, n, u; 0 or Backspace
clears. Then import the downloaded file: <code>__COMMAND__</code></div>
</header>
__QUERIES__
<h2>Candidates</h2>
<div class="grid">__CARDS__</div>
<script>
(function () {
  "use strict";
  var config = __CONFIG__;
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  var kinds = ["positive", "negative", "unsure"];
  var marks = {};
  try { marks = JSON.parse(localStorage.getItem(config.key) || "{}") || {}; } catch (e) { marks = {}; }
  var onPage = {};
  cards.forEach(function (card) { onPage[card.dataset.tileId] = true; });
  Object.keys(marks).forEach(function (tileId) {  // keep only this page's tiles, and known kinds
    if (!onPage[tileId] || kinds.indexOf(marks[tileId]) < 0) { delete marks[tileId]; }
  });
  var focused = 0;

  function save() {
    try { localStorage.setItem(config.key, JSON.stringify(marks)); } catch (e) { /* file:// may refuse */ }
  }
  function render() {
    var counts = { positive: 0, negative: 0, unsure: 0 };
    cards.forEach(function (card) {
      var mark = marks[card.dataset.tileId] || "";
      kinds.forEach(function (kind) { card.classList.toggle(kind, mark === kind); });
      card.querySelectorAll("button[data-mark]").forEach(function (button) {
        button.classList.toggle("on", button.dataset.mark === mark);
      });
    });
    Object.keys(marks).forEach(function (tileId) {
      if (counts[marks[tileId]] !== undefined) { counts[marks[tileId]] += 1; }
    });
    kinds.forEach(function (kind) { document.getElementById("count-" + kind).textContent = counts[kind]; });
  }
  function mark(card, kind) {
    if (kind) { marks[card.dataset.tileId] = kind; } else { delete marks[card.dataset.tileId]; }
    save();
    render();
  }
  function focusCard(index) {
    if (!cards.length) { return; }
    focused = Math.max(0, Math.min(cards.length - 1, index));
    cards[focused].focus();
    cards[focused].scrollIntoView({ block: "nearest" });
  }
  function csvField(value) {
    return /[",\\n\\r]/.test(value) ? '"' + value.replace(/"/g, '""') + '"' : value;
  }
  function download() {
    var lines = ["tile_id,label"];
    Object.keys(marks).forEach(function (tileId) {
      if (kinds.indexOf(marks[tileId]) >= 0) { lines.push(csvField(tileId) + "," + marks[tileId]); }
    });
    var blob = new Blob([lines.join("\\n") + "\\n"], { type: "text/csv" });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = config.file;
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  cards.forEach(function (card, index) {
    card.addEventListener("focus", function () { focused = index; });
    card.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-mark]");
      if (button) {
        var kind = button.dataset.mark;
        mark(card, marks[card.dataset.tileId] === kind ? "" : kind);
      }
      card.focus();
    });
  });
  document.getElementById("download").addEventListener("click", download);
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || !cards.length) { return; }
    var key = event.key;
    if (key === "ArrowRight" || key === "ArrowDown" || key === "j") { focusCard(focused + 1); }
    else if (key === "ArrowLeft" || key === "ArrowUp" || key === "k") { focusCard(focused - 1); }
    else if (key === "p" || key === "n" || key === "u") {
      mark(cards[focused], { p: "positive", n: "negative", u: "unsure" }[key]);
    } else if (key === "0" || key === "Backspace") { mark(cards[focused], ""); }
    else { return; }
    event.preventDefault();
  });
  render();
  if (cards.length) { cards[0].focus(); }
})();
</script>
</body></html>
"""
