"""Deterministic view augmentations of a tile: flips, 90° rotations, HED stain jitter, Gaussian blur.

Every random choice comes from a generator seeded by (tile_id, view), drawn in a fixed order whatever
operations are enabled, so a view is the same on every run, machine and resume.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageFilter

from ..sources.stains import hed_jitter

HED_ALPHA = 0.05  # stain concentration scale: U(1 - a, 1 + a)
HED_BETA = 0.02  # stain concentration shift (optical density units): U(-b, b)
BLUR_SIGMA = (0.1, 1.0)  # Gaussian sigma in tile pixels, applied to half of the views


def view_rng(tile_id: str, view: int) -> np.random.Generator:
    """The generator for one (tile, view): the same on every run."""
    digest = hashlib.blake2b(f"{tile_id}\0{view}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def augment_view(rgb: np.ndarray, tile_id: str, view: int, ops: tuple[str, ...]) -> np.ndarray:
    """View `view` (>= 1) of an (H, W, 3) uint8 tile; view 0 is the tile unchanged."""
    if view == 0 or not ops:
        return rgb
    rng = view_rng(tile_id, view)
    flip_h, flip_v = rng.random(2) < 0.5
    turns = int(rng.integers(0, 4))
    alpha = rng.uniform(1 - HED_ALPHA, 1 + HED_ALPHA, 3)
    beta = rng.uniform(-HED_BETA, HED_BETA, 3)
    blur_on = rng.random() < 0.5
    sigma = float(rng.uniform(*BLUR_SIGMA))
    out = rgb
    if "flip" in ops:
        out = out[:, ::-1] if flip_h else out
        out = out[::-1] if flip_v else out
    if "rot90" in ops and turns:
        out = np.rot90(out, turns)
    if "hed-jitter" in ops:
        out = hed_jitter(out, alpha, beta)
    if "blur" in ops and blur_on:
        image = Image.fromarray(np.ascontiguousarray(out))
        out = np.asarray(image.filter(ImageFilter.GaussianBlur(radius=sigma)))
    return np.ascontiguousarray(out)
