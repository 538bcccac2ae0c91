"""Drawing helpers shared by `embedstore preview` and heads' heatmaps: text and lines sized to the image.

Text height is a fixed share of the image height (LEGEND_SHARE), so a legend reads the same on a 1,024 px
thumbnail as on a 4,096 px one; lines get thicker with the image for the same reason.
"""

from __future__ import annotations

import numpy as np
from PIL import ImageFont
from scipy import ndimage

LEGEND_SHARE = 1 / 48  # legend text height / image height: ~21 px at 1,024 px, ~85 px at 4,096 px
MIN_TEXT_PX = 12  # below this, text is unreadable whatever the image
LINE_SHARE = 1 / 600  # line width / longest side: 2 px at 1,024 px, 7 px at 4,096 px


def legend_text_px(height: int, width: int | None = None) -> int:
    """The legend's text size in pixels for an image `height` px tall (at most a 30th of `width`, so
    long lines still fit a narrow image)."""
    size = round(height * LEGEND_SHARE)
    if width is not None:
        size = min(size, max(MIN_TEXT_PX, width // 30))
    return max(MIN_TEXT_PX, size)


def legend_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at `size` px (a scalable font since Pillow 10.1)."""
    return ImageFont.load_default(size=size)


def line_px(shape: tuple[int, ...]) -> int:
    """The width of outlines for an image of `shape` (height, width, ...)."""
    return max(1, round(max(shape[:2]) * LINE_SHARE))


def border(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of `mask` within `width` px of its edge (its outline, drawn inside it)."""
    inner = ndimage.binary_erosion(mask, iterations=max(1, width), border_value=0)
    return mask & ~inner
