"""Fragments and versions of an embedding table written in embed-sized commits, with and without the
automatic compaction that ends every embed run, and what a keyed commit costs at the end in each case.

N generated rows (256-d float16, the scale issue's shape) go into `emb__bench` through
`Catalog.insert_missing` (the keyed merge_insert every embed commit is) in --commit-rows commits (4,096:
the embed writer's floor), split into --runs runs. Without compaction the runs just write; with it,
each run ends with `Catalog.upkeep` as `embed` does (fragments merged past FRAGMENT_LIMIT small ones,
versions pruned by the store's version_retention, 7d: none are that old here). Reported per case:
fragments and versions after each run, the seconds the compactions took, and at the end the median of
--probes keyed commits of --commit-rows new rows (the cost every later embed commit pays), plus the
versions a prune at 0s would leave (what the retention bounds the count to, once versions are older).

    python benchmarks/store_versions.py [--rows 1000000] [--commit-rows 4096] [--runs 4] [--probes 7]
    python benchmarks/store_versions.py --smoke     # seconds: 20,000 rows in 256-row commits

10^6 rows of 256-d float16 take ~1.5 GB of disk for both cases in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import harness
import numpy as np
import pyarrow as pa

from embedstore.storage.catalog import Catalog
from embedstore.storage.embedding_tables import embedding_schema
from embedstore.storage.versions import FRAGMENT_LIMIT, prunable

RESULTS = harness.RESULTS / "store_versions.json"
DIM = 256
TABLE = "emb__bench"
PROVENANCE = harness.bench_provenance(DIM)


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = harness.parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows written in each case")
    parser.add_argument("--commit-rows", type=int, default=4096, help="rows per keyed commit")
    parser.add_argument("--runs", type=int, default=4, help="embed runs the rows are written in")
    parser.add_argument("--probes", type=int, default=7, help="keyed commits timed at the end")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.commit_rows, args.runs, args.probes = 20_000, 256, 2, 3
    return args


def rows(start: int, count: int, rng: np.random.Generator) -> pa.Table:
    return harness.embedding_rows(PROVENANCE, start, count, rng)


def shape(catalog: Catalog) -> dict[str, int]:
    dataset = catalog.dataset(TABLE)
    return {"fragments": len(dataset.get_fragments()), "versions": len(dataset.versions())}


def write_case(folder: Path, args: Any, compact: bool) -> dict[str, Any]:
    """Write args.rows rows in args.runs runs of keyed commits; with `compact`, upkeep ends each run."""
    catalog = Catalog.create(folder)
    catalog.create_table(TABLE, embedding_schema(PROVENANCE))
    rng = np.random.default_rng(0)
    per_run = -(-args.rows // args.runs)
    runs: list[dict[str, Any]] = []
    commit_seconds: list[float] = []
    written = 0
    started = time.perf_counter()
    for run in range(args.runs):
        end = min(args.rows, written + per_run)
        for start in range(written, end, args.commit_rows):
            chunk = rows(start, min(args.commit_rows, end - start), rng)
            began = time.perf_counter()
            catalog.insert_missing(TABLE, chunk)
            commit_seconds.append(time.perf_counter() - began)
        written = end
        entry: dict[str, Any] = {"rows": written, **shape(catalog)}
        if compact:
            [done] = catalog.upkeep([TABLE])
            entry.update(
                compacted=done.compacted,
                fragments_after_upkeep=done.fragments_after,
                versions_after_upkeep=done.versions_after,
                upkeep_seconds=done.seconds,
                note=done.note,
            )
        runs.append(entry)
        harness.say(f"{'with' if compact else 'without'} compaction, run {run + 1}: {entry}")
    write_seconds = time.perf_counter() - started
    probes = []
    for i in range(args.probes):  # the next embed run's commits, on the table as it was left
        chunk = rows(args.rows + i * args.commit_rows, args.commit_rows, rng)
        began = time.perf_counter()
        catalog.insert_missing(TABLE, chunk)
        probes.append(time.perf_counter() - began)
    dataset = catalog.dataset(TABLE)
    return {
        "rows": dataset.count_rows(),
        "runs": runs,
        "end": shape(catalog),
        "versions_after_prune_0s": len(dataset.versions()) - len(prunable(dataset, timedelta(0))),
        "write_seconds": write_seconds,
        "median_commit_s_while_writing": statistics.median(commit_seconds),
        "upkeep_seconds": sum(run.get("upkeep_seconds", 0.0) for run in runs),
        "keyed_commit_s_at_end": statistics.median(probes),
        "keyed_commit_s_probes": probes,
        "disk_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": harness.machine(),
        "args": vars(args),
        "fragment_limit": FRAGMENT_LIMIT,
        "cases": {},
    }
    with harness.scratch("store-versions-") as tmp:
        for label, compact in (("without_compaction", False), ("with_compaction", True)):
            harness.say(f"{args.rows:,} rows in {args.commit_rows:,}-row commits, {label}")
            result["cases"][label] = write_case(tmp / label, args, compact)
            harness.write_json(args.out, result)
    without, with_ = result["cases"]["without_compaction"], result["cases"]["with_compaction"]
    print(f"\n{args.rows:,} rows, {args.commit_rows:,}-row keyed commits, {args.runs} run(s):")
    print(f"{'':>22} {'fragments':>10} {'versions':>9} {'after 0s prune':>15} {'keyed commit s':>15}")
    for label, case in (("without compaction", without), ("with compaction", with_)):
        print(
            f"{label:>22} {case['end']['fragments']:>10} {case['end']['versions']:>9} "
            f"{case['versions_after_prune_0s']:>15} {case['keyed_commit_s_at_end']:>15.3f}"
        )
    print(
        f"compaction took {with_['upkeep_seconds']:.1f} s in all; writing took "
        f"{without['write_seconds']:.1f} s without, {with_['write_seconds']:.1f} s with it"
    )
    harness.write_json(args.out, result)
    harness.say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
