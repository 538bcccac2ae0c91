"""The review page in a real headless Chromium: thumbnails load, cards are marked by click and by keyboard,
and the downloaded CSV imports as labels; an empty search and an unknown tile id."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import embedstore
from embedstore import EmbedstoreError
from embedstore.search.review import write_review_page
from tests.helpers import write_tiles

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def store(tmp_path: Path) -> embedstore.Store:
    """8 tiles with stored pixels and 4 stored without (their thumbnails are read from the source files)."""
    store = embedstore.init(tmp_path / "store")
    store.ingest([write_tiles(tmp_path / "with", 8, seed=1)], task="ab", progress=False)
    store.ingest([write_tiles(tmp_path / "without", 4, seed=2)], codec="none", progress=False)
    return store


def make_hits(store: embedstore.Store, n: int) -> pl.DataFrame:
    """A search result made by hand: n tiles, mixing stored and source-only pixels, best first."""
    tiles = store.catalog.read("tiles", columns=["tile_id", "source_id", "x", "y", "pixels"]).to_pylist()
    tiles.sort(key=lambda t: (t["pixels"] is None, t["tile_id"]))
    chosen = tiles[: n - 2] + [t for t in tiles if t["pixels"] is None][:2]
    return pl.DataFrame(
        {
            "tile_id": [t["tile_id"] for t in chosen],
            "score": [0.99 - 0.05 * i for i in range(n)],
            "rank": list(range(1, n + 1)),
            "source_id": [t["source_id"] for t in chosen],
            "x": [t["x"] for t in chosen],
            "y": [t["y"] for t in chosen],
            "slide": [None] * n,
        }
    )


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: install it with `apt-get install chromium` (Debian)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is missing: `pip install playwright` (it drives the system chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_marks_by_click_and_keyboard_download_and_import_as_labels(store, tmp_path, browser):
    hits = make_hits(store, 7)
    query_tile = hits["tile_id"][0]
    query_image = ("query.png", np.full((40, 30, 3), 180, dtype=np.uint8))
    page_path = write_review_page(
        store.catalog,
        hits,
        tmp_path / "out" / "review.html",
        query_tile_ids=[query_tile],
        query_images=[query_image],
    )
    text = page_path.read_text()
    assert not re.search(r"https?://|(src|href|url)[=(][\"']?//", text), "the page must not reach out"

    page = browser.new_page()
    page.goto(page_path.as_uri())
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    widths = page.eval_on_selector_all("img.thumb", "images => images.map(i => i.naturalWidth)")
    assert len(widths) == len(hits) + 2 and all(w > 0 for w in widths)
    cards = page.locator(".card")
    assert cards.count() == len(hits)
    assert cards.nth(0).get_attribute("data-tile-id") == hits["tile_id"][0]
    body = page.inner_text("body")
    assert "Queries" in body and "0.990" in body and "query.png" in body
    assert f"embedstore labels import {store.root} --task review review-review.csv" in body

    # clicks: + on card 0, - on card 1, ? twice on card 2 (the second click clears it)
    cards.nth(0).locator("[data-mark=positive]").click()
    cards.nth(1).locator("[data-mark=negative]").click()
    cards.nth(2).locator("[data-mark=unsure]").click()
    cards.nth(2).locator("[data-mark=unsure]").click()
    # keys, from card 2: j p (3 positive), → u (4 unsure), j n 0 (5 cleared), k ← n (3 now negative)
    for key in ["j", "p", "ArrowRight", "u", "j", "n", "0", "k", "ArrowLeft", "n", "ArrowDown", "Backspace"]:
        page.keyboard.press(key)
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("u")  # card 4 unsure again, after Backspace cleared it
    ids = hits["tile_id"].to_list()
    expected = {ids[0]: "positive", ids[1]: "negative", ids[3]: "negative", ids[4]: "unsure"}
    counts = {k: page.inner_text(f"#count-{k}") for k in ("positive", "negative", "unsure")}
    assert counts == {"positive": "1", "negative": "2", "unsure": "1"}
    assert "positive" in cards.nth(0).get_attribute("class")
    assert "negative" in cards.nth(3).get_attribute("class")
    assert cards.nth(2).get_attribute("class") == "card"

    page.reload()  # marks survive a reload (localStorage)
    assert page.inner_text("#count-negative") == "2"

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "review-review.csv"
    csv_path = tmp_path / download.suggested_filename
    download.save_as(csv_path)
    assert csv_path.read_text().splitlines()[0] == "tile_id,label"
    assert dict(pl.read_csv(csv_path).iter_rows()) == expected

    assert store.import_labels("review", csv_path).labels_written == 4
    labels = store.catalog.read("labels", columns=["tile_id", "label"], filter="task = 'review'").to_pylist()
    assert {row["tile_id"]: row["label"] for row in labels} == expected


def test_empty_hits_write_a_page_saying_no_candidates(store, tmp_path):
    hits = pl.DataFrame(schema={"tile_id": pl.String, "score": pl.Float64, "rank": pl.Int64})
    path = write_review_page(store.catalog, hits, tmp_path / "empty.html", task="tumour")
    text = path.read_text()
    assert "no candidates" in text.lower() and 'class="card"' not in text
    assert "--task tumour tumour-review.csv" in text


def test_a_tile_missing_from_the_store_raises_and_writes_nothing(store, tmp_path):
    hits = make_hits(store, 3).with_columns(
        pl.Series("tile_id", ["f" * 32, *make_hits(store, 3)["tile_id"][1:]])
    )
    with pytest.raises(EmbedstoreError, match=r"1 tile\(s\) to review are not in the store") as error:
        write_review_page(store.catalog, hits, tmp_path / "out" / "review.html")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
