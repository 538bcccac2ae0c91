"""Embed the store's tiles with a backbone into `emb__<key>`, incrementally and resumably: the local executor.

Only (tile, view) rows missing from the table are computed. Vectors are committed in chunks through
`EmbeddingWriter` (each chunk atomic, each row at most once even when other processes embed the same
key at the same time), so an interrupted run leaves whole chunks and the next run fills the rest.
Decoding runs in DataLoader workers while the model runs (inline between batches on CPUs of up to 4
cores, where that is faster; see `embed.defaults`), or on the GPU for stored JPEG tiles; one batch
is on the device while the previous one's vectors are collected (`embed.pipeline`); commits run on a
thread, in chunks sized by rate (`embed.writer`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.validation import options_from
from ..runtime.resources import reuse_freed_memory, torch_threads
from ..storage.catalog import Catalog
from . import input as embed_input
from .forward import Forward
from .options import EmbedOptions, EmbedReport
from .pipeline import run_batches
from .plan import RunPlan, check_backbones, checked_vectors, plan_run, sources_without_pixels
from .timeline import Timeline
from .writer import ChunkedWriter, EmbeddingWriter

__all__ = ["check_backbones", "embed"]

WRITER_STALL_NOTE = 0.05  # a run whose model waited longer than this share for commits says so


def embed(
    catalog: Catalog, backbone_key: str, options: EmbedOptions | None = None, **kwargs: Any
) -> EmbedReport:
    """Embed every tile (and `views` augmented copies) not yet in `emb__<key>`; see EmbedOptions.
    With `engine="ray"` the work runs on Ray Data actors (`ray_engine`), with the same plan and commits."""
    options = options_from(EmbedOptions, options, kwargs)
    catalog.require_writable()
    if options.engine == "ray":
        from .ray_engine import embed_on_ray

        return embed_on_ray(catalog, backbone_key, options, options.address)
    plan = plan_run(catalog, backbone_key, options)
    if plan.missing.height == 0:
        return plan.finish()
    target, report, device, workers, wanted = plan.target, plan.report, plan.device, plan.workers, plan.wanted
    if device.type == "cpu" and options.reuse_memory:
        reuse_freed_memory()
    with torch_threads(options.threads):
        report.threads = torch.get_num_threads()
        timeline = Timeline() if options.timeline is not None else None
        size = target.backbone.spec.input_size
        forward = Forward(
            target.backbone.build(),
            device,
            wanted.precision,
            options.channels_last,
            options.compile,
            plan.batch_size,
            timeline,
        )
        slots = embed_input.BatchSlots(workers, options.prefetch, plan.batch_size, size)
        if device.type == "cuda" and not slots.pin(device):
            report.notes.append(
                "the decode ring could not be page-locked: batches are staged (one copy more)"
            )
        sources = sources_without_pixels(catalog, plan.tiles, plan.missing)
        decoder = embed_input.DecodeTiles(slots, size, options.resize, wanted.augment, sources, plan.jpeg)
        writer = ChunkedWriter(
            EmbeddingWriter(catalog, target.name, wanted, options.views),
            plan.missing.height,
            options.on_chunk,
            options.chunk_rows,
            timeline,
            sized_by_rate=options.commits_by_rate,
        )
        pipeline_started = time.perf_counter()
        try:
            _run(forward, decoder, plan, options, workers, writer, timeline)
        finally:
            writer.close()
            slots.unpin()
            report.rows_written, report.tiles_embedded = writer.rows_written, writer.tiles_written
            report.rows_written_elsewhere = writer.rows_elsewhere
            report.commits, report.writer_stalled_seconds = len(writer.commits), writer.stalled_seconds
            if catalog.has_table(target.name):
                report.table_version = int(catalog.dataset(target.name).version)
        report.pipeline_seconds = time.perf_counter() - pipeline_started
        if report.writer_stalled_seconds > WRITER_STALL_NOTE * report.pipeline_seconds:
            report.notes.append(
                f"the model waited {report.writer_stalled_seconds:.1f} s for commits "
                f"({report.writer_stalled_seconds / report.pipeline_seconds:.0%} of the run): the store's "
                "writes are the limit here"
            )
        if timeline is not None and options.timeline is not None:
            _, png = timeline.save(options.timeline)
            report.notes.append(f"{timeline.summary()}; drawn in {png}")
    plan.compact(catalog, options.compact)
    return plan.finish()


def _run(
    forward: Forward,
    decoder: embed_input.DecodeTiles,
    plan: RunPlan,
    options: EmbedOptions,
    workers: int,
    writer: ChunkedWriter,
    timeline: Timeline | None,
) -> None:
    """The loop: batches of pixels in, finite vectors out, buffered into chunks for the writer."""
    missing, wanted = plan.missing, plan.wanted
    reader = embed_input.TileReader(plan.tiles_ds, missing, plan.batch_size, decoder.slots.count, timeline)
    loader = embed_input.make_loader(reader, decoder, workers, options.prefetch, plan.device.type == "cpu")
    unit = "view" if options.views else "tile"
    bar = tqdm(
        total=missing.height,
        desc=plan.report.scope(),
        unit=unit,
        disable=not options.progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )

    def consume(batch: embed_input.PixelBatch, vectors: torch.Tensor) -> None:
        checked = checked_vectors(vectors, batch, wanted.store_dtype, wanted.backbone)
        writer.add(batch.tile_ids, batch.views, checked)
        bar.update(len(batch.tile_ids))

    batches = embed_input.start(loader)
    try:
        run_batches(batches, decoder, forward, consume, timeline)
        writer.flush()
    finally:
        reader.close()
        embed_input.stop(batches)
        bar.close()
