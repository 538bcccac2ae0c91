"""Embed on Ray Data: the local executor's plan and commits, the work spread over actors.

The driver plans exactly as `local.embed` does (the (tile, view) rows the table lacks, against a pinned
version of the tiles table) and hands those rows to Ray Data in blocks of `chunk_rows`. Each actor holds
the model once (one per GPU where there are GPUs; otherwise CPU actors of up to 4 torch threads, see
`actor_shape`, or `--workers` x `--threads`), reads its block's tiles from the store (on object storage
with the driver's storage settings), decodes, embeds, and commits the block through `EmbeddingWriter`: one
atomic commit per block, each (tile, view) at most once whatever else writes. A block whose actor dies
commits nothing; Ray retries it on another actor, and a re-run plans only what is still missing, so a
killed worker or driver never leaves duplicates or half a block.

Ray is an optional extra: `pip install "embedstore[ray]"`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from ..core.errors import EmbedstoreError
from ..core.location import storage_settings
from ..core.validation import options_from
from ..runtime.ray_cluster import connect, require_ray
from ..storage.catalog import Catalog
from .options import EmbedOptions, EmbedReport

THREADS_PER_ACTOR = 4  # torch threads of a CPU actor by default (fewer where a node has fewer CPUs)


def actor_shape(ray: Any, gpus: int, workers: int | None, threads: int | None) -> tuple[int, int]:
    """(actors, torch threads each). One actor per GPU; on CPUs actors of up to 4 threads. Measured on
    this 2-core machine over 2,000 tiles, 2 actors x 1 thread and 1 x 2 tie (46-52 tiles/s): the two
    single-thread actors embed faster once running (69-79 against 63-65 tiles/s) but start 3 s later.
    Wider actors hold fewer copies of the model, which matters for large backbones on big nodes.
    An actor's threads never exceed the CPUs of the smallest node, or it could not be placed."""
    if gpus:
        return workers or gpus, threads or 1
    cpus = int(ray.cluster_resources().get("CPU", 1))
    node_cpus = [
        int(node["Resources"].get("CPU", 0))
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("CPU")
    ]
    largest_fit = min(node_cpus, default=cpus)
    if threads is None:
        threads = max(1, cpus // workers) if workers else min(THREADS_PER_ACTOR, largest_fit)
    threads = min(threads, largest_fit)
    return workers or max(1, cpus // threads), threads


def actor_env(catalog: Catalog, on_gpu: bool, reuse_memory: bool) -> dict[str, str]:
    """Environment variables for the actors' processes (Ray's runtime_env, on other machines too).

    - A store on object storage: the driver's storage settings, so that actors reach the same bucket
      with the same credentials and endpoint.
    - CPU actors that reuse freed memory: one glibc arena (MALLOC_ARENA_MAX=1, read at process start).
      Ray runs an actor's calls on a thread of its own, and glibc gives such a thread one of its arenas;
      a thread of a secondary arena cannot keep allocations over 64 MB in its heap, so each forward's
      large activations came from fresh zeroed pages: measured here, 1 run in 3 embedded at half speed
      with 40x the page faults (17.8 M against 0.45 M). An explicit MALLOC_ARENA_MAX is passed as is.
    """
    env = {} if catalog.is_local else storage_settings()
    if not on_gpu and reuse_memory:
        env["MALLOC_ARENA_MAX"] = os.environ.get("MALLOC_ARENA_MAX", "1")
    return env


def embed_on_ray(
    catalog: Catalog,
    backbone_key: str,
    options: EmbedOptions | None = None,
    address: str | None = None,
    **kwargs: Any,
) -> EmbedReport:
    """`local.embed`'s job on Ray Data; same rows, same ids, same vectors (see the module doc)."""
    from .plan import plan_run, sources_without_pixels

    options = options_from(EmbedOptions, options, kwargs)
    require_ray()
    plan = plan_run(catalog, backbone_key, options)
    if plan.missing.height == 0:
        return plan.finish()
    ray = connect(address)
    _quiet(ray)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if plan.device.type == "cuda" else 0
    actors, threads = actor_shape(ray, gpus, options.workers, options.threads)
    report = plan.report
    report.engine, report.workers, report.threads = "ray", actors, threads
    rows = pa.table(
        {
            "pos": pa.array(plan.missing["pos"].to_numpy().astype(np.int64)),
            "view": pa.array(plan.missing["view"].to_numpy().astype(np.int16)),
        }
    )
    setup = {
        "store": str(catalog.root),
        "tiles_version": int(plan.tiles_ds.version),
        "backbone_key": backbone_key,
        "weights": None if options.weights is None else str(options.weights),
        "provenance": plan.wanted,
        "table": plan.target.name,
        "views": options.views,
        "resize": options.resize,
        "batch_size": plan.batch_size,
        "device": "cuda" if gpus else "cpu",
        "threads": threads,
        "channels_last": options.channels_last,
        "reuse_memory": options.reuse_memory,
        "sources": sources_without_pixels(catalog, plan.tiles, plan.missing),
    }
    # One input block per commit, made here (a Ray task splitting them would wait for a CPU that the
    # actor pool holds); at least 4 blocks per actor so that every actor has work, at most chunk_rows.
    block_rows = min(options.chunk_rows, max(plan.batch_size, -(-rows.num_rows // (4 * actors))))
    chunks = [rows.slice(start, block_rows) for start in range(0, rows.num_rows, block_rows)]
    blocks = ray.data.from_arrow(chunks).map_batches(
        EmbedBlock,
        batch_size=block_rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=0 if gpus else threads,
        num_gpus=1 if gpus else 0,
        fn_constructor_kwargs={"setup": setup},
        runtime_env={"env_vars": actor_env(catalog, bool(gpus), options.reuse_memory)},
    )
    bar = tqdm(total=rows.num_rows, desc=report.scope(), unit="row", disable=not options.progress)
    failures: list[str] = []
    started = time.perf_counter()
    tiles: set[str] = set()
    try:
        for done in blocks.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(done["rows"])):
                if done["error"][i]:
                    failures.append(str(done["error"][i]))
                else:
                    report.rows_written += int(done["inserted"][i])
                    report.rows_written_elsewhere += int(done["rows"][i] - done["inserted"][i])
                bar.update(int(done["rows"][i]))
            for joined in done["tile_ids"]:
                tiles.update(t for t in str(joined).split("\n") if t)
    finally:
        bar.close()
        report.pipeline_seconds = time.perf_counter() - started
        report.tiles_embedded = len(tiles)
        if catalog.has_table(plan.target.name):
            report.table_version = int(catalog.dataset(plan.target.name).version)
    if failures:
        raise EmbedstoreError(
            f"{len(failures)} block(s) failed and were not written (the others were): {failures[0]}; "
            "fix the cause and run embed again to complete the table"
        )
    plan.compact(catalog, options.compact)
    return plan.finish()


def _quiet(ray: Any) -> None:
    """Our progress bar instead of Ray Data's per-operator logging."""
    import logging

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


class EmbedBlock:
    """A Ray Data actor: builds the model once, then embeds and commits one block of rows per call."""

    def __init__(self, setup: dict[str, Any]) -> None:
        import torch

        from ..core.schema import TILES
        from ..runtime.resources import reuse_freed_memory
        from .forward import Forward
        from .input import BatchSlots, DecodeTiles
        from .plan import resolve_backbone
        from .writer import EmbeddingWriter

        torch.set_num_threads(setup["threads"])
        if setup["device"] == "cpu" and setup["reuse_memory"]:
            reuse_freed_memory()  # as the local engine: no page faults on every forward's activations
        self.setup = setup
        catalog = Catalog.open(setup["store"])
        self.tiles = catalog.dataset(TILES, setup["tiles_version"])
        backbone = resolve_backbone(setup["backbone_key"], setup["weights"])
        size, provenance = backbone.spec.input_size, setup["provenance"]
        self.forward = Forward(
            backbone.build(),
            torch.device(setup["device"]),
            provenance.precision,
            setup["channels_last"],
            False,
            setup["batch_size"],
        )
        self.writer = EmbeddingWriter(catalog, setup["table"], provenance, setup["views"])
        # The local engine's decoding, inline: one slot, filled and read once per batch.
        slots = BatchSlots(0, 1, setup["batch_size"], size)
        self.decoder = DecodeTiles(slots, size, setup["resize"], provenance.augment, setup["sources"])

    def __call__(self, block: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from ..sources.tile_pixels import TILE_COLUMNS
        from .input import make_payload
        from .plan import checked_vectors

        # Ray Data may call from another thread than __init__'s, and OpenMP's thread count is per thread.
        torch.set_num_threads(self.setup["threads"])
        positions, views = block["pos"], block["view"].astype(np.int16)
        unique, inverse = np.unique(positions, return_inverse=True)
        rows = self.tiles.take(unique, columns=TILE_COLUMNS).to_pylist()
        provenance, batch_size = self.setup["provenance"], self.setup["batch_size"]
        tile_ids, batch_views, parts = [], [], []
        for start in range(0, len(positions), batch_size):
            end = start + batch_size
            batch = self.decoder[make_payload(rows, inverse[start:end], views[start:end])]
            if batch.error is not None:
                return _outcome(len(positions), 0, [], batch.error)
            vectors = self.forward(self.decoder.slots.pixels(batch))
            try:
                parts.append(checked_vectors(vectors, batch, provenance.store_dtype, provenance.backbone))
            except EmbedstoreError as error:
                return _outcome(len(positions), 0, [], str(error))
            tile_ids += batch.tile_ids
            batch_views.append(batch.views)
        inserted = self.writer.write(tile_ids, np.concatenate(batch_views), np.concatenate(parts))
        return _outcome(len(positions), inserted, tile_ids, "")


def _outcome(rows: int, inserted: int, tile_ids: list[str], error: str) -> dict[str, np.ndarray]:
    """One output row per block (tile ids joined, so that every column has one value per row)."""
    return {
        "rows": np.array([rows], np.int64),
        "inserted": np.array([inserted], np.int64),
        "error": np.array([error], dtype=object),
        "tile_ids": np.array(["\n".join(sorted(set(tile_ids)))], dtype=object),
    }
