"""Pixel primitives shared by ingest, embed and search: opening slides and images, tissue detection,
tile grids, cutting regions, tile codecs, stain vectors, and a stored tile's pixels.

Nothing here knows about the store's tables; ingest and embed both build on these modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .drawing import border, legend_font, legend_text_px, line_px
    from .grid import GridSettings
    from .preview import preview_slide
    from .slides import open_slide, thumbnail_rgb
    from .tissue import tissue_mask

# the public pieces heads draws with and `embedstore preview` shows; loaded on first use (OpenSlide is not
# imported by `import sources`)
_LAZY = {
    "open_slide": ".slides",
    "thumbnail_rgb": ".slides",
    "tissue_mask": ".tissue",
    "GridSettings": ".grid",
    "preview_slide": ".preview",
    "border": ".drawing",
    "legend_font": ".drawing",
    "legend_text_px": ".drawing",
    "line_px": ".drawing",
}

__all__ = [
    "GridSettings",
    "border",
    "legend_font",
    "legend_text_px",
    "line_px",
    "open_slide",
    "preview_slide",
    "thumbnail_rgb",
    "tissue_mask",
]


__getattr__ = lazy_exports(__name__, _LAZY)
