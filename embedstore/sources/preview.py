"""A picture of how a slide will be tiled: thumbnail, detected tissue, and the tiles ingest would keep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.validation import output_file
from .grid import GridSettings
from .layout import SlideLayout, layout_slide

KEPT = (0, 170, 70)
TISSUE_TINT = np.array([40, 120, 255], dtype=np.float32)


def render_preview(layout: SlideLayout, max_side: int = 1600) -> Image.Image:
    """The thumbnail with tissue tinted blue and every kept tile outlined in green, plus a caption."""
    thumb = layout.thumbnail.astype(np.float32)
    thumb[layout.mask] = 0.75 * thumb[layout.mask] + 0.25 * TISSUE_TINT
    image = Image.fromarray(thumb.round().astype(np.uint8))
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
    sx = image.width / layout.geometry.width
    sy = image.height / layout.geometry.height
    draw = ImageDraw.Draw(image)
    for tile in layout.grid.tiles:
        box = (tile.x * sx, tile.y * sy, (tile.x + layout.grid.size0) * sx, (tile.y + layout.grid.size0) * sy)
        draw.rectangle(box, outline=KEPT, width=1)
    caption = (
        f"{len(layout.grid.tiles)} tiles of {layout.grid.tile_size} px at {layout.grid.mpp:.3g} um/px "
        f"(slide {layout.mpp:.3g} um/px, {layout.mpp_origin}; level {layout.grid.level}); "
        "blue: tissue, green: kept tiles"
    )
    font = ImageFont.load_default(size=15)
    canvas = Image.new("RGB", (image.width, image.height + 26), "white")
    canvas.paste(image, (0, 26))
    ImageDraw.Draw(canvas).text((6, 5), caption, fill=(0, 0, 0), font=font)
    return canvas


def preview_slide(path: str | Path, out: str | Path, grid: GridSettings | None = None) -> SlideLayout:
    """Write a preview PNG of how `path` would be tiled; returns the layout (its grid has the tiles)."""
    out = output_file("--out", out)
    layout = layout_slide(Path(path), grid or GridSettings())
    render_preview(layout).save(output_file("--out", out, make_folder=True))
    return layout
