"""The embed loop shared by the local executor and the GPU benchmark: decoded batches in, vectors out.

Each batch's forward pass is submitted before the previous batch's features are collected, so on CUDA
the GPU works on batch k+1 while batch k's features come back and go to the writer (and the decode
workers fill the next slots meanwhile). Rows reach `consume` in the order the loader gave them.
Importable without Lance, polars or OpenSlide (the benchmark runs on bare CUDA images).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import torch

from ..core.errors import EmbedstoreError
from .forward import Forward, PendingFeatures
from .input import DecodeTiles, PixelBatch
from .timeline import Timeline

Consume = Callable[[PixelBatch, torch.Tensor], None]


def run_batches(
    batches: Iterable[PixelBatch],
    decoder: DecodeTiles,
    forward: Forward,
    consume: Consume,
    timeline: Timeline | None = None,
) -> int:
    """Embed every batch, one in flight on the device while the previous one is consumed; returns rows.

    A batch that failed to decode raises EmbedstoreError after the batches before it were consumed.
    """
    pending: tuple[PixelBatch, PendingFeatures] | None = None
    rows = 0
    for batch in _timed(batches, timeline):
        if batch.error is not None:
            if pending is not None:
                _collect(pending, forward, consume, timeline)
            raise EmbedstoreError(batch.error)
        started = time.perf_counter()
        if batch.encoded is not None and timeline is not None:
            with timeline.span("decode device", len(batch.tile_ids)):
                pixels = decoder.pixels(batch)
        else:
            pixels = decoder.pixels(batch)
        submitted = (batch, forward.submit(pixels))
        if timeline is not None:
            timeline.add("forward", started, time.perf_counter(), len(batch.tile_ids))
        if pending is not None:
            _collect(pending, forward, consume, timeline)
        pending = submitted
        rows += len(batch.tile_ids)
    if pending is not None:
        _collect(pending, forward, consume, timeline)
    return rows


def _collect(
    pending: tuple[PixelBatch, PendingFeatures],
    forward: Forward,
    consume: Consume,
    timeline: Timeline | None,
) -> None:
    batch, features = pending
    if timeline is None:
        consume(batch, features.result())
        return
    with timeline.span("collect", len(batch.tile_ids)):
        vectors = features.result()
    spans = forward.device_spans(features)
    if spans is not None:
        timeline.add("device", *spans, len(batch.tile_ids))
    consume(batch, vectors)


def _timed(batches: Iterable[PixelBatch], timeline: Timeline | None) -> Iterator[PixelBatch]:
    """The batches; with a timeline, each one's decoding and the wait for it are recorded."""
    if timeline is None:
        yield from batches
        return
    iterator = iter(batches)
    while True:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        timeline.add("wait", started, time.perf_counter())
        if batch.decoded is not None:
            start, end, worker = batch.decoded
            lane = "decode main" if worker < 0 else f"decode w{worker}"
            timeline.add(lane, start, end, len(batch.tile_ids))
        yield batch
