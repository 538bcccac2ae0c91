"""Fixtures: small real data made by the tests themselves (see tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import embedstore
from tests.helpers import synthetic_slide, write_image, write_pyramid


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


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for a test module: 2 CPUs, as on this machine (skips without the ray extra)."""
    ray = pytest.importorskip("ray", reason='the ray extra is not installed: pip install "embedstore[ray]"')
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server on localhost (moto, server mode) for a test module, with its settings
    in os.environ; yields the endpoint (skips without the moto dev dependency)."""
    pytest.importorskip("moto.server", reason='the S3 tests need moto: pip install "moto[server]"')
    from tests.s3_server import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny models (`pytestmark = pytest.mark.usefixtures(...)`): small
    batches run fastest on one thread and do not fight other processes for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
