"""Embed the store's tiles with a backbone into `emb__<key>`, incrementally and resumably: the local executor.

Only (tile, view) rows missing from the table are computed. Vectors are committed in chunks through
`EmbeddingWriter` (each chunk atomic, each row at most once even when other processes embed the same
key at the same time), so an interrupted run leaves whole chunks and the next run fills the rest.
Decoding runs in DataLoader workers while the model runs (inline between batches on CPUs of up to 4
cores, where that is faster; see `runtime.default_workers`); commits run on a thread.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.errors import EmbedstoreError
from ..core.validation import options_from
from ..runtime.resources import reuse_freed_memory, torch_threads
from ..storage.catalog import Catalog
from . import input as embed_input
from .forward import Forward
from .options import EmbedOptions, EmbedReport
from .plan import RunPlan, check_backbones, checked_vectors, plan_run, sources_without_pixels
from .writer import ChunkedWriter, EmbeddingWriter

__all__ = ["check_backbones", "embed"]


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
        size = target.backbone.spec.input_size
        forward = Forward(
            target.backbone.build(),
            device,
            wanted.precision,
            options.channels_last,
            options.compile,
            options.batch_size,
        )
        slots = embed_input.BatchSlots(workers, options.prefetch, options.batch_size, size)
        sources = sources_without_pixels(catalog, plan.tiles, plan.missing)
        jpeg = embed_input.device_jpeg(options.decode, device, size, options.resize)
        if jpeg is not None:
            report.notes.append(f"stored JPEG tiles decoded on {device.type} (torchvision)")
        decoder = embed_input.DecodeTiles(slots, size, options.resize, wanted.augment, sources, jpeg)
        writer = ChunkedWriter(
            EmbeddingWriter(catalog, target.name, wanted, options.views),
            plan.missing.height,
            options.on_chunk,
            options.chunk_rows,
        )
        pipeline_started = time.perf_counter()
        try:
            _run(forward, decoder, plan, options, workers, device, writer)
        finally:
            writer.close()
            report.rows_written, report.tiles_embedded = writer.rows_written, writer.tiles_written
            report.rows_written_elsewhere = writer.rows_elsewhere
            if catalog.has_table(target.name):
                report.table_version = int(catalog.dataset(target.name).version)
        report.pipeline_seconds = time.perf_counter() - pipeline_started
    return plan.finish()


def _run(
    forward: Forward,
    decoder: embed_input.DecodeTiles,
    plan: RunPlan,
    options: EmbedOptions,
    workers: int,
    device: torch.device,
    writer: ChunkedWriter,
) -> None:
    """The loop: batches of pixels in, finite vectors out, buffered into chunks for the writer."""
    missing, wanted = plan.missing, plan.wanted
    reader = embed_input.TileReader(plan.tiles_ds, missing, options.batch_size, decoder.slots.count)
    loader = embed_input.make_loader(reader, decoder, workers, options.prefetch, device.type == "cpu")
    unit = "view" if options.views else "tile"
    bar = tqdm(
        total=missing.height,
        desc=plan.report.scope(),
        unit=unit,
        disable=not options.progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    batches = embed_input.start(loader)
    try:
        for batch in batches:
            if batch.error is not None:
                raise EmbedstoreError(batch.error)
            vectors = forward(decoder.pixels(batch))
            writer.add(
                batch.tile_ids,
                batch.views,
                checked_vectors(vectors, batch, wanted.store_dtype, wanted.backbone),
            )
            bar.update(len(batch.tile_ids))
        writer.flush()
    finally:
        reader.close()
        embed_input.stop(batches)
        bar.close()
