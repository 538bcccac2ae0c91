"""Small real data made by the tests themselves: pyramidal TIFF slides, image folders, manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import embedstore

SLIDE_MPP = 0.5
TISSUE = (214, 120, 180)  # an eosin-pink that tissue detection must find


def synthetic_slide(height: int = 1536, width: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An RGB slide: white glass with one ellipse of textured pink tissue; returns (pixels, tissue mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((xx - width * 0.45) / (width * 0.3)) ** 2 + ((yy - height * 0.5) / (height * 0.3)) ** 2 <= 1.0
    image = np.full((height, width, 3), 245, dtype=np.uint8)
    noise = rng.integers(-25, 25, size=(height, width, 3))
    image[mask] = np.clip(np.array(TISSUE) + noise[mask], 0, 255).astype(np.uint8)
    return image, mask


def write_pyramid(path: Path, image: np.ndarray, mpp: float | None = SLIDE_MPP, levels: int = 3) -> Path:
    """A tiled, lossless (deflate) pyramidal TIFF that OpenSlide reads as generic-tiff."""
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            pixels = image[:: 2**level, :: 2**level]
            extra = {}
            if mpp is not None:
                extra = {"resolution": (1e4 / (mpp * 2**level),) * 2, "resolutionunit": "CENTIMETER"}
            tif.write(
                pixels,
                tile=(256, 256),
                photometric="rgb",
                compression="zlib",
                subfiletype=0 if level == 0 else 1,
                **extra,
            )
    return path


def write_image(path: Path, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def slide_pixels() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_slide()


@pytest.fixture
def slide_path(tmp_path: Path, slide_pixels) -> Path:
    return write_pyramid(tmp_path / "slide.tif", slide_pixels[0])


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/train/{tumour,normal}/*.png (4 + 3) and root/valid/{tumour,normal}/*.png (2 + 1), 32 px."""
    root = tmp_path / "folder"
    counts = {("train", "tumour"): 4, ("train", "normal"): 3, ("valid", "tumour"): 2, ("valid", "normal"): 1}
    seed = 0
    for (split, label), count in counts.items():
        (root / split / label).mkdir(parents=True)
        for i in range(count):
            seed += 1
            write_image(root / split / label / f"{label}_{i}.png", 32, seed)
    return root


@pytest.fixture
def store(tmp_path: Path) -> embedstore.Store:
    return embedstore.init(tmp_path / "store")


def table_versions(store: embedstore.Store) -> dict[str, int]:
    return {name: int(store.table(name).version) for name in store.table_names()}
