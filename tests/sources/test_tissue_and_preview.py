"""Tissue detection and the slide preview, which must agree with what ingest keeps."""

from __future__ import annotations

import numpy as np
from PIL import Image

from embedstore import IngestOptions
from embedstore.sources import legend_font, legend_text_px
from embedstore.sources.grid import GridSettings
from embedstore.sources.preview import preview_slide
from embedstore.sources.tissue import tissue_mask


def test_small_holes_are_filled_and_lumens_stay_open():
    image = np.full((400, 400, 3), 245, dtype=np.uint8)
    image[50:350, 50:350] = (200, 110, 170)  # tissue
    image[100:103, 100:103] = 245  # a 3x3 px hole: filled
    image[200:300, 200:300] = 245  # a 100x100 px lumen: stays glass
    mask = tissue_mask(image)
    assert mask[101, 101] and mask[60, 60]
    assert not mask[250, 250] and not mask[10, 10]
    assert 0.45 < mask.mean() < 0.52  # 300² - 100² of 400²: 0.5


def test_blank_glass_has_no_tissue():
    assert not tissue_mask(np.full((300, 300, 3), 240, dtype=np.uint8)).any()


def test_preview_draws_the_tiles_ingest_keeps(store, slide_path, tmp_path):
    grid = GridSettings(target_mpp=1.0, tile_size=128, min_tissue=0.5)
    layout = preview_slide(slide_path, tmp_path / "preview.png", grid)
    report = store.ingest(
        [slide_path], IngestOptions(target_mpp=1.0, tile_size=128, min_tissue=0.5, progress=False)
    )
    assert len(layout.grid.tiles) == report.tiles_added > 0
    picture = np.asarray(Image.open(tmp_path / "preview.png").convert("RGB"))
    assert picture.shape[0] > 100 and ((picture == (0, 170, 70)).all(axis=-1)).sum() > 100  # green outlines
    assert ((picture == (0, 200, 255)).all(axis=-1)).sum() > 100  # the tissue's cyan outline


def _text_height(height: int) -> int:
    """The pixel height of a legend line drawn for an image `height` px tall."""
    font = legend_font(legend_text_px(height))
    top, bottom = font.getbbox("p(tumour) 0.5")[1::2]
    return bottom - top


def test_legend_text_is_a_fixed_share_of_the_image_height():
    small, large = _text_height(1024), _text_height(4096)
    assert small >= 15  # readable on a 1,024 px image (the old legend: about 8 px)
    assert 3.5 < large / small < 4.5  # and just as readable at 4,096 px
    assert legend_text_px(100) >= 12  # never unreadably small
