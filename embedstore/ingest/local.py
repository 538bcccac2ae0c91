"""Ingest on this machine: plan every source first, then read tiles in parallel and commit them in chunks.

Guarantees: a source is either wholly in the store or not at all; re-running adds nothing; an
interrupted run resumes; processes ingesting into one store at once end with one row per key; without
`skip_errors` a failure leaves the store as it was (this run's rows are taken back out).

With `engine="ray"` the tiles are read by Ray workers (`ray_engine`), with the same plan and commits.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..core.errors import SourceError
from ..core.validation import options_from
from ..storage.catalog import Catalog
from .options import IngestOptions, IngestReport
from .planning import SourcePlan, TilePlan
from .reading import read_tile
from .run import IngestRun, prepare, rolled_back_on_failure, source_failed, tile_bar


def ingest(
    catalog: Catalog, paths: list[Path], options: IngestOptions | None = None, **kwargs: Any
) -> IngestReport:
    """Ingest `paths` into the store; see the module docstring for the guarantees."""
    options = options_from(IngestOptions, options, kwargs)
    catalog.require_writable()
    if options.engine == "ray":
        from .ray_engine import ingest_on_ray

        return ingest_on_ray(catalog, paths, options)
    run = prepare(catalog, paths, options)
    _read_and_commit(run)
    return run.finish()


def _read_and_commit(run: IngestRun) -> None:
    """Read the missing tiles of every source in order, a bounded number in flight, and commit them."""
    work, writer, options = run.work(), run.writer, run.options
    bar = tile_bar(sum(len(missing) for _, missing in work), options)
    pending: deque[tuple[SourcePlan, list[TilePlan], list[Future]]] = deque()
    in_flight, limit = 0, options.workers * 16
    try:
        with rolled_back_on_failure(writer), ThreadPoolExecutor(options.workers) as pool:
            for plan, missing in work:
                futures = [pool.submit(read_tile, plan, tile, run.pixels) for tile in missing]
                pending.append((plan, missing, futures))
                in_flight += len(futures)
                while in_flight > limit and len(pending) > 1:
                    in_flight -= _finish(*pending.popleft(), run, bar)
            while pending:
                _finish(*pending.popleft(), run, bar)
            writer.flush()
    finally:
        bar.close()


def _finish(plan: SourcePlan, missing: list[TilePlan], futures: list[Future], run: IngestRun, bar) -> int:
    """Collect one source's tiles; a failed read fails the whole source. Returns futures consumed."""
    try:
        encoded = [future.result() for future in futures]
    except SourceError as error:
        for future in futures:
            future.cancel()
        plan.release()
        source_failed(plan, str(error), run.writer, run.options)
        return len(futures)
    plan.release()
    bar.update(len(futures))
    run.writer.add_source(plan, missing, encoded)
    return len(futures)
