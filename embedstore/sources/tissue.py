"""Tissue detection on a slide thumbnail: Otsu on saturation, small holes filled, specks removed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

MIN_SATURATION = 0.05  # below this a pixel is glass or background, whatever Otsu says
SMALL_HOLE_FRACTION = 5e-4  # holes under this fraction of the thumbnail are filled; lumens stay open


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """A boolean mask, True where the (H, W, 3) uint8 thumbnail shows tissue."""
    saturation = ndimage.median_filter(rgb2hsv(thumbnail)[..., 1], size=5)
    if float(saturation.max() - saturation.min()) < 1e-3:
        threshold = MIN_SATURATION
    else:
        threshold = max(float(threshold_otsu(saturation)), MIN_SATURATION)
    # Otsu splits tissue from tissue when the whole image is tissue: cap the threshold there.
    threshold = min(threshold, 0.15)
    mask = saturation > threshold
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=2)
    mask = _fill_small_holes(mask, max_fraction=SMALL_HOLE_FRACTION)
    return _remove_specks(mask, min_fraction=1e-4)


def _fill_small_holes(mask: np.ndarray, max_fraction: float) -> np.ndarray:
    holes, count = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    if count == 0:
        return mask
    sizes = ndimage.sum(np.ones_like(mask), holes, index=np.arange(1, count + 1))
    small = np.zeros(count + 1, dtype=bool)
    small[1:] = sizes <= max(16.0, max_fraction * mask.size)
    return mask | small[holes]


def _remove_specks(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = sizes >= max(4.0, min_fraction * mask.size)
    return keep[labels]
