"""What every ingest executor shares: the run planned before any tile is read, and how each source's
outcome is committed or recorded.

`prepare` discovers and plans every source (without skip_errors the first failure stops before anything
is written), folds byte-identical copies into one plan, settles label conflicts and opens the writer.
An executor then reads the tiles `IngestRun.work` names, wherever it likes (threads here, Ray workers
elsewhere), and hands each source to `IngestWriter.add_source`, or its failure to `source_failed`, all
inside `rolled_back_on_failure`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..core.errors import SourceError
from ..core.schema import FILES, LABELS, SOURCES, TILES
from ..storage.catalog import Catalog
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
from .reading import PixelSettings
from .writer import IngestWriter


@dataclass
class IngestRun:
    """One run's plans (one per source, copies folded in), its writer and report, and its pixel settings."""

    options: IngestOptions
    plans: list[SourcePlan]
    writer: IngestWriter
    report: IngestReport
    pixels: PixelSettings
    started: float

    def work(self) -> list[tuple[SourcePlan, list[TilePlan]]]:
        """Every plan with the tiles the store lacks (the ones to read), in plan order."""
        return [(plan, self.writer.missing_tiles(plan)) for plan in self.plans]

    def finish(self) -> IngestReport:
        """The report, after the automatic compaction of the tables this run wrote (`Catalog.upkeep`)."""
        report = self.report
        wrote = report.tiles_added or report.labels_written or report.files_recorded or report.sources_ok
        if self.options.compact and (wrote or report.sources_failed):
            report.compaction = self.writer.catalog.upkeep([TILES, LABELS, FILES, SOURCES])
        report.seconds = time.perf_counter() - self.started
        return report


def prepare(catalog: Catalog, paths: list[Path], options: IngestOptions) -> IngestRun:
    """Discover and plan every source, fold copies, settle labels and open the writer; nothing written."""
    started = time.perf_counter()
    report = IngestReport(engine=options.engine)
    jobs = discover(paths, options.kind, options.dataset, _columns(options))
    if options.task is not None:
        report.labels_skipped_empty = sum(job.empty_labels for job in jobs)
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
    return IngestRun(options, plans, writer, report, pixels, started)


def source_failed(plan: SourcePlan, message: str, writer: IngestWriter, options: IngestOptions) -> None:
    """A source whose reading failed: recorded as failed with skip_errors, else SourceError (the caller
    rolls back)."""
    if not options.skip_errors:
        raise SourceError(
            f"{message}; the store was left as it was (--skip-errors ingests the rest)"
        ) from None
    writer.add_failure(plan.job.path, plan.job.kind, message)


@contextmanager
def rolled_back_on_failure(writer: IngestWriter) -> Iterator[None]:
    """Take this run's commits back out when a source fails without skip_errors (SourceError)."""
    try:
        yield
    except SourceError:
        writer.rollback()
        raise


def tile_bar(total: int, options: IngestOptions) -> tqdm:
    """The progress bar over the tiles to read."""
    return tqdm(total=total, desc="ingesting tiles", unit="tile", disable=not options.progress or total == 0)


def _columns(options: IngestOptions) -> TableColumns:
    return TableColumns(
        options.path_column,
        options.path_template,
        options.image_column,
        options.label_column,
        tuple(options.groups.items()),
        options.images_dir,
        options.one_based,
        record_labels=options.task is not None,
        skip_empty_labels=options.skip_empty_labels,
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
