"""Stain vectors and stain-space operations on H&E pixels (Ruifrok & Johnston colour deconvolution)."""

from __future__ import annotations

import numpy as np

# Ruifrok & Johnston H&E-DAB stain vectors (rows: H, E, DAB; optical density), the values of
# skimage.color.rgb_from_hed. The hand-crafted backbone uses them as they are; the jitter normalises rows.
RUIFROK_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
RGB_FROM_HED = np.array(RUIFROK_HED) / np.linalg.norm(RUIFROK_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def hed_jitter(rgb: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale and shift each stain's concentration in optical-density space (Tellez et al. 2018)."""
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0)
    stains = od.reshape(-1, 3) @ HED_FROM_RGB.astype(np.float32)
    stains = stains * alpha.astype(np.float32) + beta.astype(np.float32)
    od = stains @ RGB_FROM_HED.astype(np.float32)
    out = 256.0 * np.exp(-od) - 1.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(rgb.shape)
