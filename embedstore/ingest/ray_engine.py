"""Ingest with the tile reading on Ray: the local executor's plan and commits, the pixels read by workers.

The driver discovers and plans every source exactly as `local.ingest` does (`run.prepare`) and asks the
writer which tiles the store lacks. Those tiles are cut into pieces (a source's tiles, at most a task's
worth), the pieces packed into Ray tasks, and at most `--workers` tasks are in flight. A task gets only
what reading needs, picklable: each piece's absolute file path, kind and tile plans, and the pixel
settings; it reopens the file on the worker and reads through the local engine's `read_tile`, so the
bytes are the same. The driver collects the tasks oldest first and commits each source, once all its
pieces are back, through the same `IngestWriter`: same rows, same ids, whole sources per commit.

A piece whose reading fails fails its source: recorded as failed with skip_errors, otherwise this run's
commits are taken back out. A worker killed mid-task commits nothing (only the driver writes); Ray runs
the task again on another worker, and a re-run after a killed driver reads only what is still missing.
On a cluster every node must see the files at the same absolute paths (a shared filesystem).

Ray is an optional extra: `pip install "embedstore[ray]"`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import EmbedstoreError, SourceError
from ..runtime.ray_cluster import check_reachable, connect, require_ray
from ..storage.catalog import Catalog
from .discover import SourceJob
from .options import IngestOptions, IngestReport
from .planning import SourcePlan, TilePlan
from .reading import PixelSettings, read_tile
from .run import IngestRun, prepare, rolled_back_on_failure, source_failed, tile_bar

MAX_TASK_TILES = 256  # tiles one task reads at most: enough to pay for a task, few enough to spread a slide
Encoded = tuple[bytes | None, str | None]


@dataclass(frozen=True)
class Piece:
    """A run of consecutive tiles of one source for a worker to read (everything in it is picklable)."""

    source: int  # index into the run's work list
    path: str  # absolute, so that a worker anywhere finds the file
    kind: str  # slide | image | points
    tiles: list[TilePlan]


@dataclass
class _Gathering:
    """One source's pieces as they come back."""

    plan: SourcePlan
    missing: list[TilePlan]
    pieces_left: int
    encoded: list[Encoded] = field(default_factory=list)
    failed: bool = False


def ingest_on_ray(catalog: Catalog, paths: list[Path], options: IngestOptions) -> IngestReport:
    """`local.ingest`'s job with the tiles read on Ray; same rows, same ids, same pixels."""
    require_ray()
    if options.address is not None:
        check_reachable(options.address)  # before planning: a wrong address fails at once
    run = prepare(catalog, paths, options)
    work = run.work()
    with rolled_back_on_failure(run.writer):
        for plan, missing in work:
            if not missing:  # nothing to read, but its files or labels may be new
                run.writer.add_source(plan, [], [])
        if any(missing for _, missing in work):
            _read_on_ray(connect(options.address), work, run)
        run.writer.flush()
    return run.finish()


def _read_on_ray(ray: Any, work: list[tuple[SourcePlan, list[TilePlan]]], run: IngestRun) -> None:
    """Read the missing tiles on Ray, at most `workers` tasks in flight, and commit each source once
    whole (sources with nothing to read are the caller's)."""
    total = sum(len(missing) for _, missing in work)
    per_task = max(1, min(MAX_TASK_TILES, -(-total // (4 * run.options.workers))))
    gathering = [_Gathering(plan, missing, 0) for plan, missing in work]
    pieces = make_pieces(work, per_task)
    for piece in pieces:
        gathering[piece.source].pieces_left += 1
    read = ray.remote(num_cpus=1)(read_pieces)
    pending: deque[tuple[list[Piece], Any]] = deque()
    bar = tile_bar(total, run.options)
    try:
        for task in pack(pieces, per_task):
            pending.append((task, read.remote(task, run.pixels)))
            if len(pending) >= run.options.workers:
                _collect(ray, *pending.popleft(), gathering, run, bar)
        while pending:
            _collect(ray, *pending.popleft(), gathering, run, bar)
    finally:
        bar.close()
        for _, ref in pending:  # a failure stops the run: the tasks still queued are not wanted
            ray.cancel(ref)


def make_pieces(work: list[tuple[SourcePlan, list[TilePlan]]], per_task: int) -> list[Piece]:
    """Each source's missing tiles in runs of at most `per_task`, in plan order."""
    return [
        Piece(index, str(plan.job.path.resolve()), plan.job.kind, missing[start : start + per_task])
        for index, (plan, missing) in enumerate(work)
        for start in range(0, len(missing), per_task)
    ]


def pack(pieces: list[Piece], per_task: int) -> list[list[Piece]]:
    """Consecutive pieces grouped into tasks of at most `per_task` tiles (many one-tile images per task)."""
    tasks: list[list[Piece]] = []
    size = 0
    for piece in pieces:
        if not tasks or size + len(piece.tiles) > per_task:
            tasks.append([])
            size = 0
        tasks[-1].append(piece)
        size += len(piece.tiles)
    return tasks


def read_pieces(pieces: list[Piece], pixels: PixelSettings) -> list[list[Encoded] | str]:
    """On a Ray worker: each piece's encoded tiles, or the message of the SourceError that failed it."""
    out: list[list[Encoded] | str] = []
    for piece in pieces:
        plan = SourcePlan(SourceJob(Path(piece.path), piece.kind), "", "", {}, [])  # reopens the file here
        try:
            out.append([read_tile(plan, tile, pixels) for tile in piece.tiles])
        except SourceError as error:
            out.append(str(error))
        finally:
            plan.release()
    return out


def _collect(ray: Any, task: list[Piece], ref: Any, gathering: list[_Gathering], run: IngestRun, bar) -> None:
    """Wait for one task; commit the sources it completes, fail those whose piece failed."""
    for piece, result in zip(task, _get(ray, ref), strict=True):
        source = gathering[piece.source]
        source.pieces_left -= 1
        if source.failed:
            continue
        if isinstance(result, str):
            source.failed, source.encoded = True, []
            source_failed(source.plan, result, run.writer, run.options)
            continue
        source.encoded += result
        bar.update(len(result))
        if source.pieces_left == 0:
            run.writer.add_source(source.plan, source.missing, source.encoded)
            source.encoded = []


def _get(ray: Any, ref: Any) -> list[list[Encoded] | str]:
    """A task's result; a one-line EmbedstoreError when Ray lost it (its retries spent), a bug's own
    traceback otherwise."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError:
        raise
    except ray.exceptions.RayError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EmbedstoreError(
            f"a Ray worker was lost while reading tiles ({first}); the sources committed so far are whole: "
            "run ingest again to complete the store"
        ) from None
