"""The embed input path (backbones, `Forward`, the decode pipeline) works on a bare GPU-node image that
has torch and timm but no Lance, LanceDB, polars, OpenSlide or FAISS (issue #23): a subprocess with those
imports blocked decodes stored JPEG tiles and embeds them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys

    BLOCKED = {"lance", "lancedb", "polars", "openslide", "faiss"}


    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None


    sys.meta_path.insert(0, Blocker())

    import io

    import numpy as np
    import pyarrow as pa
    import torch
    from PIL import Image

    from embedstore.backbones import PixelInput, get_backbone
    from embedstore.embed import defaults
    from embedstore.embed.forward import Forward
    from embedstore.embed.input import (
        ArrowTiles, BatchSlots, DecodeTiles, TileReader, device_jpeg, make_loader, start, stop,
    )
    from embedstore.embed.pipeline import run_batches
    from embedstore.embed.timeline import Timeline


    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(6):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    n = len(jpegs)
    table = pa.table({
        "tile_id": [f"t{i}" for i in range(n)], "pixels": jpegs, "source_id": ["s"] * n,
        "x": [0] * n, "y": [0] * n, "level": [0] * n, "size0": [64] * n,
        "width": [64] * n, "height": [64] * n,
    })
    missing = pa.table({"pos": np.arange(n), "view": np.zeros(n, dtype=np.int16)})

    backbone = get_backbone("test_efficientnet.random")
    model = backbone.build()
    assert isinstance(model, PixelInput)
    size, batch_size = backbone.spec.input_size, 4
    assert defaults.for_device("cpu", 0.0).batch_size == 64
    timeline = Timeline()
    forward = Forward(model, torch.device("cpu"), "fp32", True, False, batch_size, timeline)

    slots = BatchSlots(0, 1, batch_size, size)
    jpeg = device_jpeg("device", torch.device("cpu"), size, "bicubic")
    decoder = DecodeTiles(slots, size, "bicubic", (), {}, jpeg)
    reader = TileReader(ArrowTiles(table), missing, batch_size, slots.count, timeline)
    batches = start(make_loader(reader, decoder, 0, 1, True))
    ids, vectors = [], []

    def consume(batch, features):
        ids.extend(batch.tile_ids)
        vectors.append(features)

    try:
        run_batches(batches, decoder, forward, consume, timeline)
    finally:
        reader.close()
        stop(batches)
    assert {span.lane for span in timeline.spans} >= {"read", "decode device", "forward", "collect"}
    vectors = torch.cat(vectors)
    assert ids == [f"t{i}" for i in range(n)], ids
    assert vectors.shape == (n, backbone.spec.dim), vectors.shape
    assert torch.isfinite(vectors).all()
    random_tiles = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)
    assert forward(random_tiles).shape == (3, backbone.spec.dim)
    loaded = sorted(m for m in BLOCKED if m in sys.modules)
    assert not loaded, loaded
    print("embedded", tuple(vectors.shape))
    """
)


def test_embed_input_path_runs_without_lance_polars_openslide_faiss():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "embedded (6," in done.stdout
