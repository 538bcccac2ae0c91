"""Deterministic view augmentations of a tile: flips, 90° rotations, HED stain jitter, Gaussian blur.

Every random choice comes from a generator seeded by (tile_id, view), drawn in a fixed order whatever
operations are enabled, so a view is the same on every run, machine and resume.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageFilter

from .errors import EmbedstoreError

AUGMENTATIONS = ("flip", "rot90", "hed-jitter", "blur")
HED_ALPHA = 0.05  # stain concentration scale: U(1 - a, 1 + a)
HED_BETA = 0.02  # stain concentration shift (optical density units): U(-b, b)
BLUR_SIGMA = (0.1, 1.0)  # Gaussian sigma in tile pixels, applied to half of the views

# Ruifrok & Johnston H&E-DAB stain vectors (rows: H, E, DAB; optical density), the values of
# skimage.color.rgb_from_hed. The hand-crafted backbone uses them as they are; the jitter normalises rows.
RUIFROK_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
RGB_FROM_HED = np.array(RUIFROK_HED) / np.linalg.norm(RUIFROK_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


def parse_augment(augment: str | Iterable[str]) -> tuple[str, ...]:
    """A validated tuple of augmentation names, from a list or a comma-separated string."""
    names = augment.split(",") if isinstance(augment, str) else list(augment)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise EmbedstoreError(f"unknown augmentation {unknown[0]!r}; use some of {','.join(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise EmbedstoreError(f"augmentation list {','.join(names)} names one twice")
    return tuple(names)


def view_rng(tile_id: str, view: int) -> np.random.Generator:
    """The generator for one (tile, view): the same on every run."""
    digest = hashlib.blake2b(f"{tile_id}\0{view}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def hed_jitter(rgb: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale and shift each stain's concentration in optical-density space (Tellez et al. 2018)."""
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0)
    stains = od.reshape(-1, 3) @ HED_FROM_RGB.astype(np.float32)
    stains = stains * alpha.astype(np.float32) + beta.astype(np.float32)
    od = stains @ RGB_FROM_HED.astype(np.float32)
    out = 256.0 * np.exp(-od) - 1.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(rgb.shape)


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
