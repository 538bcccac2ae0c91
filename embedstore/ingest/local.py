"""Ingest on this machine: plan every source first, then read tiles in parallel and commit them in chunks.

Guarantees: a source is either wholly in the store or not at all; re-running adds nothing; an
interrupted run resumes; processes ingesting into one store at once end with one row per key; without
`skip_errors` a failure leaves the store as it was (this run's rows are taken back out).
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..catalog import Catalog
from ..errors import SourceError
from ..validation import options_from
from .discover import SourceJob, TableColumns, discover
from .options import IngestOptions, IngestReport
from .planning import (
    SourcePlan,
    TilePlan,
    copies_across_splits,
    merge_copies,
    plan_source,
    resolve_label_conflicts,
)
from .reading import PixelSettings, read_tile
from .writer import IngestWriter


def ingest(
    catalog: Catalog, paths: list[Path], options: IngestOptions | None = None, **kwargs: Any
) -> IngestReport:
    """Ingest `paths` into the store; see the module docstring for the guarantees."""
    options = options_from(IngestOptions, options, kwargs)
    started = time.perf_counter()
    report = IngestReport()
    jobs = discover(paths, options.kind, options.dataset, _columns(options))
    plans, failures = _plan_all(jobs, options)
    plans, report.copies = merge_copies(plans)
    report.notes += copies_across_splits(plans)
    if options.task is None:
        if any(tile.label is not None for plan in plans for tile in plan.tiles):
            report.notes.append("labels were found but not recorded: pass --task NAME to record them")
    else:
        report.label_conflicts = resolve_label_conflicts(plans, options.on_label_conflict, options.task)
    writer = IngestWriter(catalog, options.task, report, options.chunk_tiles)
    for job, message in failures:
        writer.add_failure(job.path, job.kind, message)
    pixels = PixelSettings(options.codec, options.jpeg_quality)
    _read_and_commit(plans, writer, pixels, options)
    report.seconds = time.perf_counter() - started
    return report


def _columns(options: IngestOptions) -> TableColumns:
    return TableColumns(
        options.path_column,
        options.path_template,
        options.image_column,
        options.label_column,
        tuple(options.groups.items()),
        options.images_dir,
        options.one_based,
    )


def _plan_all(
    jobs: list[SourceJob], options: IngestOptions
) -> tuple[list[SourcePlan], list[tuple[SourceJob, str]]]:
    """Plan every source before writing anything; without skip_errors the first failure stops here."""

    def attempt(job: SourceJob) -> SourcePlan | tuple[SourceJob, str]:
        try:
            return plan_source(job, options)
        except SourceError as error:
            return (job, str(error))

    with ThreadPoolExecutor(options.workers) as pool:
        results = list(
            tqdm(
                pool.map(attempt, jobs),
                total=len(jobs),
                desc="scanning sources",
                unit="source",
                disable=not options.progress or len(jobs) < 2,
                leave=False,
            )
        )
    failures = [r for r in results if isinstance(r, tuple)]
    if failures and not options.skip_errors:
        more = f" (and {len(failures) - 1} more failing source(s))" if len(failures) > 1 else ""
        raise SourceError(f"{failures[0][1]}{more}; nothing was written (--skip-errors ingests the rest)")
    return [r for r in results if isinstance(r, SourcePlan)], failures


def _read_and_commit(
    plans: list[SourcePlan], writer: IngestWriter, pixels: PixelSettings, options: IngestOptions
) -> None:
    """Read the missing tiles of every source in order, a bounded number in flight, and commit them."""
    work = [(plan, writer.missing_tiles(plan)) for plan in plans]
    to_read = sum(len(missing) for _, missing in work)
    bar = tqdm(
        total=to_read, desc="ingesting tiles", unit="tile", disable=not options.progress or to_read == 0
    )
    pending: deque[tuple[SourcePlan, list[TilePlan], list[Future]]] = deque()
    in_flight, limit = 0, options.workers * 16
    try:
        with ThreadPoolExecutor(options.workers) as pool:
            for plan, missing in work:
                futures = [pool.submit(read_tile, plan, tile, pixels) for tile in missing]
                pending.append((plan, missing, futures))
                in_flight += len(futures)
                while in_flight > limit and len(pending) > 1:
                    in_flight -= _finish(*pending.popleft(), writer, options, bar)
            while pending:
                _finish(*pending.popleft(), writer, options, bar)
        writer.flush()
    except SourceError:
        writer.rollback()
        raise
    finally:
        bar.close()


def _finish(
    plan: SourcePlan,
    missing: list[TilePlan],
    futures: list[Future],
    writer: IngestWriter,
    options: IngestOptions,
    bar,
) -> int:
    """Collect one source's tiles; a failed read fails the whole source. Returns futures consumed."""
    try:
        encoded = [future.result() for future in futures]
    except SourceError as error:
        for future in futures:
            future.cancel()
        plan.release()
        if not options.skip_errors:
            raise SourceError(
                f"{error}; the store was left as it was (--skip-errors ingests the rest)"
            ) from None
        writer.add_failure(plan.job.path, plan.job.kind, str(error))
        return len(futures)
    plan.release()
    bar.update(len(futures))
    writer.add_source(plan, missing, encoded)
    return len(futures)
