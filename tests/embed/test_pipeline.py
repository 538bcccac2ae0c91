"""The GPU-shaped embed pipeline, checked on CPU: features collected one batch late keep their values and
row order, decode slots are not reused while a transfer may still read them, the device defaults, the
timeline, and commits sized by rate."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

import embedstore
from embedstore.embed import defaults
from embedstore.embed.forward import Forward
from embedstore.embed.input import (
    ArrowTiles,
    BatchSlots,
    DecodeTiles,
    TileReader,
    make_loader,
    start,
    stop,
)
from embedstore.embed.local import embed
from embedstore.embed.pipeline import run_batches
from embedstore.embed.plan import device_decoded_share
from embedstore.embed.timeline import Timeline
from embedstore.embed.writer import COMMIT_INTERVAL, ChunkedWriter, EmbeddingWriter, next_chunk_rows
from embedstore.sources.codecs import encode_tile
from embedstore.sources.tile_pixels import TILE_COLUMNS
from embedstore.storage.embedding_tables import Provenance
from tests.helpers import write_tiles

CPU = torch.device("cpu")


class _Mean(torch.nn.Module):
    """Each tile's mean pixel per channel: features that show which pixels a batch really had."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def test_features_collected_late_keep_their_values_in_submission_order():
    forward = Forward(torch.nn.Flatten(), CPU, "fp32", False, False, 4)
    batches = [torch.randint(0, 255, (4, 3, 2, 2), dtype=torch.uint8) for _ in range(5)]
    pending = [forward.submit(batch) for batch in batches]  # more than the ring holds, none collected
    for batch, features in zip(batches, pending, strict=True):
        assert torch.equal(features.result(), batch.flatten(1).float())
    assert forward(batches[0]).shape == (4, 12)  # the plain call is submit + result


class _LateReader:
    """A forward pass that reads its pixels only when its features are collected, as a GPU's
    asynchronous transfer reads a page-locked slot after `submit` has returned."""

    def __init__(self) -> None:
        self.views: list[torch.Tensor] = []

    def submit(self, pixels: torch.Tensor) -> _LateFeatures:
        return _LateFeatures(pixels)


class _LateFeatures:
    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels

    def result(self) -> torch.Tensor:
        return self.pixels.float().mean(dim=(2, 3))


def _tiles(n: int, side: int = 16) -> tuple[pa.Table, np.ndarray]:
    """n tiles of one flat colour each (PNG, lossless), and each tile's expected channel means."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    pixels = [encode_tile(np.broadcast_to(c, (side, side, 3)).copy(), "png") for c in colours]
    columns = {name: [0] * n for name in TILE_COLUMNS}
    columns.update(tile_id=[f"t{i:04d}" for i in range(n)], pixels=pixels, source_id=["s"] * n)
    columns.update(width=[side] * n, height=[side] * n, size0=[side] * n)
    table = pa.table({name: columns[name] for name in TILE_COLUMNS})
    return table, colours.astype(np.float32)


@pytest.mark.parametrize("workers", [0, 2])
def test_slots_are_not_reused_while_a_batch_is_in_flight(workers):
    """Decode workers race ahead into the ring while one batch's pixels are still unread: every batch
    must still see its own tiles, in order."""
    table, colours = _tiles(96)
    missing = pa.table({"pos": np.arange(96), "view": np.zeros(96, np.int16)})
    slots = BatchSlots(workers, 2, 4, 16)
    decoder = DecodeTiles(slots, 16, "bilinear", (), {})
    reader = TileReader(ArrowTiles(table), missing, 4, slots.count)
    got: list[str] = []
    means: list[np.ndarray] = []

    def consume(batch, vectors):
        got.extend(batch.tile_ids)
        means.append(vectors.numpy())

    batches = start(make_loader(reader, decoder, workers, 2, False))
    try:
        rows = run_batches(batches, decoder, _LateReader(), consume)  # type: ignore[arg-type]
    finally:
        reader.close()
        stop(batches)
    assert rows == 96 and got == [f"t{i:04d}" for i in range(96)]
    np.testing.assert_array_equal(np.concatenate(means), colours)


def test_timeline_records_every_stage_and_draws_it(tmp_path):
    table, _ = _tiles(24)
    missing = pa.table({"pos": np.arange(24), "view": np.zeros(24, np.int16)})
    timeline = Timeline()
    slots = BatchSlots(1, 2, 8, 16)
    decoder = DecodeTiles(slots, 16, "bilinear", (), {})
    reader = TileReader(ArrowTiles(table), missing, 8, slots.count, timeline)
    forward = Forward(_Mean(), CPU, "fp32", True, False, 8, timeline)
    batches = start(make_loader(reader, decoder, 1, 2, False))
    try:
        run_batches(batches, decoder, forward, lambda batch, vectors: None, timeline)
    finally:
        reader.close()
        stop(batches)
    rows = {}
    for span in timeline.spans:
        assert span.end >= span.start
        rows[span.lane] = rows.get(span.lane, 0) + span.rows
    assert rows["read"] == 24 and rows["decode w0"] == 24
    assert rows["forward"] == 24 and rows["collect"] == 24 and "wait" in rows
    busy = timeline.busy()
    assert 0 < busy["decode"] <= timeline.wall() and set(busy) >= {"read", "decode", "forward"}
    json_path, png_path = timeline.save(tmp_path / "run.png")
    saved = json.loads(json_path.read_text())
    assert len(saved["spans"]) == len(timeline.spans) and saved["wall_s"] > 0
    assert png_path.stat().st_size > 1000


@pytest.mark.parametrize(
    "device, cpus, gpu_gib, share, expected",
    [
        ("cpu", 2, None, 0.0, (64, 0)),  # this machine: decode between batches
        ("cpu", 32, None, 0.0, (64, 4)),
        ("cuda", 16, 141, 0.0, (256, 15)),  # the H200 node, CPU decoding: every core but one
        ("cuda", 64, 80, 0.0, (256, 16)),
        ("cuda", 16, 141, 1.0, (256, 2)),  # the GPU decodes: workers only pass bytes along
        ("cuda", 16, 141, 0.5, (256, 15)),  # half PNG or views: the CPUs still decode much
        ("cuda", 8, 12, 0.0, (64, 7)),  # a small GPU keeps the smaller batch
        ("cuda", 1, 24, 1.0, (256, 1)),
    ],
)
def test_defaults_fit_the_device(device, cpus, gpu_gib, share, expected):
    gpu_bytes = None if gpu_gib is None else gpu_gib * 2**30
    assert defaults.choose(device, cpus, gpu_bytes, share) == defaults.Defaults(*expected)


def test_device_decoded_share_counts_unaugmented_jpeg_rows():
    import polars as pl

    tiles = pl.DataFrame({"pos": [0, 1, 2], "pixel_format": ["jpeg", "png", None]})
    missing = pl.DataFrame({"pos": [0, 0, 1, 2], "view": [0, 1, 0, 0]}, schema_overrides={"view": pl.Int16})
    assert device_decoded_share(tiles, missing) == 0.25
    assert device_decoded_share(tiles, missing.head(0)) == 0.0


@pytest.mark.parametrize(
    "rate, commit_seconds, expected",
    [
        (0.0, 0.1, 4096),  # no rate yet: the floor
        (1_000, 0.01, 4096),  # slow: the floor (a commit per 4 s)
        (20_000, 0.03, math.ceil(20_000 * COMMIT_INTERVAL)),  # fast: COMMIT_INTERVAL seconds of rows
        (20_000, 3.0, 120_000),  # commits of 3 s: chunks of 6 s, so the writer is busy half the time
        (10**7, 0.03, 200_000),  # the ceiling
    ],
)
def test_next_chunk_rows(rate, commit_seconds, expected):
    assert next_chunk_rows(rate, commit_seconds, 4096, 200_000) == expected


def test_commits_are_sized_by_the_rate_and_every_row_lands_once(tmp_path):
    """Rows arriving at 20,000 per (simulated) second: after the first chunk, a commit per ~2 s of rows
    instead of one per 4,096 rows; every row written exactly once."""
    store = embedstore.init(tmp_path / "s")
    provenance = Provenance(
        backbone="b",
        weights_sha256="",
        dim=8,
        input_size=8,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        resize="bicubic",
        precision="fp32",
        store_dtype="float32",
    )
    now = [0.0]
    writer = ChunkedWriter(
        EmbeddingWriter(store.catalog, "emb__b", provenance), 200_000, None, 4096, clock=lambda: now[0]
    )
    batch = 1000
    for b in range(200):
        ids = [f"t{b * batch + i:06d}" for i in range(batch)]
        writer.add(ids, np.zeros(batch, np.int16), np.full((batch, 8), b, np.float32))
        now[0] += batch / 20_000
    writer.flush()
    writer.close()
    sizes = [rows for rows, _ in writer.commits]
    assert sum(sizes) == 200_000 == writer.rows_written
    assert sizes[0] == 5000 and min(sizes[1:-1]) >= 20_000 * COMMIT_INTERVAL
    assert len(sizes) <= 1 + math.ceil(195_000 / (20_000 * COMMIT_INTERVAL))
    table = store.catalog.read("emb__b", columns=["tile_id"])
    assert table.num_rows == 200_000 and len(set(table.column("tile_id").to_pylist())) == 200_000


def test_embed_defaults_and_timeline_from_the_api(tmp_path):
    store = embedstore.init(tmp_path / "s")
    folder = write_tiles(tmp_path / "tiles", 10, seed=0, side=32)
    store.ingest([folder], embedstore.IngestOptions(task="t", progress=False))
    report = embed(store.catalog, "resnet18.random", progress=False, timeline=tmp_path / "out" / "run")
    assert report.batch_size == 64 and report.rows_written == 10 and report.commits == 1
    assert (tmp_path / "out" / "run.png").is_file() and (tmp_path / "out" / "run.json").is_file()
    assert any("timeline over" in note for note in report.notes)
