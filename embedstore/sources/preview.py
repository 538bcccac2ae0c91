"""A picture of how a slide will be tiled: thumbnail, detected tissue, and the tiles ingest would keep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..core.validation import output_file
from .drawing import border, legend_font, legend_text_px, line_px
from .grid import GridSettings
from .layout import SlideLayout, layout_slide

KEPT = (0, 170, 70)  # kept tiles' outlines
TISSUE = (0, 200, 255)  # tissue outline: a cyan that neither stain nor glass has
TISSUE_TINT = np.array([0, 200, 255], dtype=np.float32)
TINT = 0.2  # how much tissue is tinted towards TISSUE_TINT (the stain stays readable)
GLASS_DIM = 0.85  # glass is darkened this much towards grey, so tissue stands out


def render_preview(layout: SlideLayout, max_side: int = 1600) -> Image.Image:
    """The thumbnail with tissue tinted and outlined in cyan, every kept tile outlined in green, and a
    legend strip above it (text a fixed share of the picture's height, `legend_text_px`)."""
    image = Image.fromarray(layout.thumbnail)
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
    mask = np.asarray(Image.fromarray(layout.mask).resize(image.size, Image.Resampling.NEAREST))
    picture = np.asarray(image, dtype=np.float32).copy()
    picture[mask] = (1.0 - TINT) * picture[mask] + TINT * TISSUE_TINT
    picture[~mask] = GLASS_DIM * picture[~mask] + (1.0 - GLASS_DIM) * 128.0
    width = line_px(picture.shape)
    picture[border(mask, width + 1)] = TISSUE
    image = Image.fromarray(picture.round().astype(np.uint8))
    sx = image.width / layout.geometry.width
    sy = image.height / layout.geometry.height
    draw = ImageDraw.Draw(image)
    for tile in layout.grid.tiles:
        box = (tile.x * sx, tile.y * sy, (tile.x + layout.grid.size0) * sx, (tile.y + layout.grid.size0) * sy)
        draw.rectangle(box, outline=KEPT, width=width)
    return _with_legend(image, layout)


def _with_legend(image: Image.Image, layout: SlideLayout) -> Image.Image:
    """`image` below a white strip: what was found (tiles, size, resolution), then a key of the colours."""
    size = legend_text_px(image.height, image.width)
    font = legend_font(size)
    step, pad = round(size * 1.35), size // 2
    lines = [
        f"{len(layout.grid.tiles)} tiles of {layout.grid.tile_size} px at {layout.grid.mpp:.3g} um/px "
        f"(level {layout.grid.level})",
        f"slide {layout.mpp:.3g} um/px ({layout.mpp_origin})",
    ]
    canvas = Image.new("RGB", (image.width, image.height + pad + step * (len(lines) + 1)), "white")
    canvas.paste(image, (0, canvas.height - image.height))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * step), line, fill=(0, 0, 0), font=font)
    y, x = pad + len(lines) * step, pad
    for colour, label in ((TISSUE, "tissue"), (KEPT, "kept tile")):
        draw.rectangle((x, y, x + size, y + size), outline=colour, width=max(2, size // 5))
        x += size + size // 3
        draw.text((x, y), label, fill=(0, 0, 0), font=font)
        x += round(draw.textlength(label, font=font)) + size
    return canvas


def preview_slide(path: str | Path, out: str | Path, grid: GridSettings | None = None) -> SlideLayout:
    """Write a preview PNG of how `path` would be tiled; returns the layout (its grid has the tiles)."""
    out = output_file("--out", out)
    layout = layout_slide(Path(path), grid or GridSettings())
    render_preview(layout).save(output_file("--out", out, make_folder=True))
    return layout
