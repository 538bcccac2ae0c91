"""--decode: stored JPEG tiles decoded by torchvision where the model runs, the same vectors as the CPU path.

Measured on the built-in PCam sample re-encoded as JPEG q90 with resnet18 (random init), on CPU: the
torchvision decode gives the very pixels Pillow gives (both are libjpeg-turbo), so the vectors' max abs
difference is 0.0; TOLERANCE leaves room only for float summation order. On CUDA, where torch has no
uint8 resize kernel, the resize runs in float in two rounded passes (`resize_two_pass`): pixels within 2
levels of the CPU kernel's, resnet18 vectors within 7.8e-5 (max |v| 0.78) on the same tiles, measured on
the CPU; RESIZE_TOLERANCE bounds it. nvJPEG's own decode could not be measured here (no GPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import embedstore
from cli.main import app
from embedstore.backbones.registry import get_backbone
from embedstore.core.errors import EmbedstoreError
from embedstore.embed.input import (
    BatchSlots,
    DecodeTiles,
    DeviceJpeg,
    Payload,
    device_jpeg,
    fill_batch,
    resize_two_pass,
)
from embedstore.embed.local import embed
from embedstore.embed.options import EmbedOptions
from embedstore.samples import pcam_sample
from embedstore.sources.codecs import decode_tile, encode_tile
from embedstore.storage.embedding_tables import table_name
from tests.helpers import write_tiles

KEY = "resnet18.random"
TOLERANCE = 1e-5  # max abs difference of vectors, torchvision vs Pillow decode (measured: 0.0 on CPU)
RESIZE_TOLERANCE = 5e-4  # the same, with the float two-pass resize of non-CPU devices (measured: 7.8e-5)
CPU = torch.device("cpu")


def _jpegs(n: int) -> list[bytes]:
    files = sorted(pcam_sample().rglob("*.jpg"))[:n]
    return [encode_tile(np.asarray(Image.open(path).convert("RGB")), "jpeg") for path in files]


def _store(tmp_path: Path, codec: str, n: int = 12) -> embedstore.Store:
    store = embedstore.init(tmp_path / codec)
    folder = write_tiles(tmp_path / f"tiles_{codec}", n, seed=0, side=64)
    store.ingest([folder], embedstore.IngestOptions(task="t", codec=codec, progress=False))
    return store


def _table(store: embedstore.Store) -> tuple[list[str], list[int], np.ndarray]:
    table = store.catalog.read(table_name(KEY), columns=["tile_id", "view", "vector"])
    vectors = np.stack([np.asarray(v, dtype=np.float32) for v in table.column("vector").to_pylist()])
    return table.column("tile_id").to_pylist(), table.column("view").to_pylist(), vectors


def test_decode_choice_per_option_and_device():
    assert device_jpeg("cpu", CPU, 224, "bicubic") is None
    assert device_jpeg("auto", CPU, 224, "bicubic") is None  # auto decodes on the device only on CUDA
    assert isinstance(device_jpeg("device", CPU, 224, "bicubic"), DeviceJpeg)  # torchvision on the CPU
    with pytest.raises(EmbedstoreError, match="unknown decode 'gpu'"):
        device_jpeg("gpu", CPU, 224, "bicubic")
    if not torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert device_jpeg("auto", cuda, 224, "bicubic") is None  # falls back to the CPU workers
        with pytest.raises(EmbedstoreError) as error:
            device_jpeg("device", cuda, 224, "bicubic")
        message = str(error.value)
        assert message.startswith("--decode device: torchvision cannot decode JPEG on cuda")
        assert message.endswith("use --decode cpu") and "\n" not in message


def test_decode_device_is_refused_with_ray():
    with pytest.raises(EmbedstoreError, match="--decode"):
        EmbedOptions(engine="ray", decode="device")
    assert EmbedOptions(engine="ray").decode == "auto"  # Ray actors keep decoding on their CPUs


def test_decode_choice_per_codec_and_view():
    """JPEG tiles of view 0 go to the device decoder; PNG tiles and augmented views decode into the slot."""
    slots = BatchSlots(0, 1, 4, 32)
    decoder = DecodeTiles(slots, 32, "bicubic", ("flip",), {}, DeviceJpeg(CPU, 32, "bicubic"))
    rgb = np.full((48, 48, 3), 128, dtype=np.uint8)
    jpeg = {"tile_id": "j", "pixels": encode_tile(rgb, "jpeg"), "source_id": "s"}
    png = {"tile_id": "p", "pixels": encode_tile(rgb, "png"), "source_id": "s"}
    batch = decoder[Payload([jpeg], [(0, 0)])]
    assert batch.encoded == [jpeg["pixels"]] and decoder.pixels(batch).shape == (1, 3, 32, 32)
    assert decoder[Payload([jpeg, png], [(0, 0), (1, 0)])].encoded is None  # a PNG in the batch: CPU
    assert decoder[Payload([jpeg], [(0, 0), (0, 1)])].encoded is None  # an augmented view: CPU
    cpu_only = DecodeTiles(slots, 32, "bicubic", (), {})  # --decode cpu
    assert cpu_only[Payload([jpeg], [(0, 0)])].encoded is None


def test_torchvision_decode_gives_pillows_pixels_and_vectors():
    """The built-in PCam sample re-encoded as JPEG: same pixels at 224 px, same resnet18 vectors."""
    encoded = _jpegs(32)
    device = DeviceJpeg(CPU, 224, "bicubic")(encoded)
    pillow = torch.empty((len(encoded), 224, 224, 3), dtype=torch.uint8)
    fill_batch(pillow, [decode_tile(item) for item in encoded], 224, "bicubic")
    pillow = pillow.permute(0, 3, 1, 2)
    assert (device.int() - pillow.int()).abs().max().item() <= 1
    model = get_backbone(KEY).build().eval()
    with torch.inference_mode():
        difference = (model(device) - model(pillow)).abs().max().item()
    assert difference <= TOLERANCE


def test_float_resize_of_devices_matches_the_cpu_kernel():
    """The resize CUDA runs (float, two rounded passes), here on CPU: within 2 levels, RESIZE_TOLERANCE."""
    decoded = torch.stack(
        [torch.from_numpy(decode_tile(item).copy()).permute(2, 0, 1) for item in _jpegs(16)]
    )
    model = get_backbone(KEY).build().eval()
    for mode in ("bicubic", "bilinear"):
        kernel = torch.nn.functional.interpolate(decoded, size=(224, 224), mode=mode, antialias=True)
        floats = resize_two_pass(decoded, 224, mode)
        assert floats.dtype == torch.uint8 and (floats.int() - kernel.int()).abs().max().item() <= 2
        with torch.inference_mode():
            assert (model(floats) - model(kernel)).abs().max().item() <= RESIZE_TOLERANCE


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_store_embedded_with_device_decode_equals_cpu_decode(tmp_path, codec):
    stores = {}
    for decode in ("cpu", "device"):
        store = _store(tmp_path / decode, codec)
        report = embed(store.catalog, KEY, progress=False, workers=1, batch_size=5, decode=decode)
        assert report.rows_written == 12
        stores[decode] = _table(store)
    (ids_cpu, views_cpu, cpu), (ids_device, views_device, device) = stores["cpu"], stores["device"]
    assert ids_device == ids_cpu and views_device == views_cpu  # row order and tile ids exact
    assert np.abs(device - cpu).max() <= TOLERANCE


def test_cli_decode_flag(tmp_path):
    store = _store(tmp_path, "jpeg", n=4)
    runner = CliRunner()
    base = ["embed", str(store.root), "--backbone", KEY, "--no-progress", "--workers", "0"]
    result = runner.invoke(app, [*base, "--decode", "gpu"])
    assert result.exit_code == 2 and "--decode" in result.output
    result = runner.invoke(app, [*base, "--decode", "device"])
    assert result.exit_code == 0, result.output
    assert "4 rows written" in result.output
