"""The embed writer at GPU rates: does committing vectors hold the model back, at 10^5 to 10^7 rows?

A producer hands batches of 256 vectors (256-d float16, the scale issue's shape) to `ChunkedWriter`, the
local engine's writer, paced at --rate rows/s as a GPU would (20,000: small CNNs on one H200), for
--seconds per run, into an embedding table pre-filled with generated rows to each --sizes size. Per size
it runs the writer as `embed` does now (commits sized by rate, `embed.writer.next_chunk_rows`) and with
fixed 4,096-row commits (before), and reports: rows/s achieved (the producer's pace when the writer keeps
up), seconds the producer stalled waiting for a commit while producing, the drain (the last chunk's
commit after the producer finished: a fixed cost per run, not per row), commits, the median and longest
commit, and the versions the run added. The keyed commit path itself is
`embedstore.storage.keyed_writes` (issue #24).

With --writers 1,2,4 each size also runs that many producer processes at once (separate `embed` runs
sharing the offered rate: each offers rate/N), so the writers race through claims into one table; the
rows/s reported is the sum of their paces, and each is checked to have committed every row it offered.

    python benchmarks/embed_writer.py [--sizes 100000,1000000,10000000] [--rate 20000] [--seconds 10]
        [--writers 1]
    python benchmarks/embed_writer.py --smoke     # seconds: a 2,000-row table, 1 s runs

10^7 rows of 256-d float16 take ~5.5 GB of disk in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
import lance
import numpy as np
import pyarrow as pa

from embedstore.embed.writer import ChunkedWriter, EmbeddingWriter
from embedstore.storage.catalog import Catalog
from embedstore.storage.embedding_tables import embedding_schema

RESULTS = harness.RESULTS / "embed_writer.json"
DIM = 256
BATCH = 256
FILL_ROWS = 500_000  # rows per pre-fill append
PROVENANCE = harness.bench_provenance(DIM)
TABLE = "emb__bench"


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = harness.parser(__doc__)
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="table sizes, comma-separated")
    parser.add_argument("--rate", type=float, default=20_000.0, help="rows/s the producer offers")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds each run produces")
    parser.add_argument(
        "--writers", default="1", help="producer processes sharing the rate, e.g. 1,2,4 (each run apart)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.seconds, args.writers = "2000", 1.0, "1,2"
    return args


def rows(start: int, count: int, rng: np.random.Generator) -> pa.Table:
    return harness.embedding_rows(PROVENANCE, start, count, rng)


def prefill(catalog: Catalog, size: int, have: int, rng: np.random.Generator) -> None:
    """Grow the table from `have` to `size` rows with plain appends (fast; the keys are unique)."""
    path = catalog.table_path(TABLE)
    for start in range(have, size, FILL_ROWS):
        lance.write_dataset(rows(start, min(FILL_ROWS, size - start), rng), str(path), mode="append")


def produce(catalog: Catalog, args: Any, first_id: int, sized_by_rate: bool) -> dict[str, Any]:
    """Offer rows at args.rate for args.seconds to a ChunkedWriter; what it cost the producer."""
    versions = catalog.dataset(TABLE).version
    first_id = int(first_id)
    writer = ChunkedWriter(
        EmbeddingWriter(catalog, TABLE, PROVENANCE), 0, None, 4096, sized_by_rate=sized_by_rate
    )
    rng = np.random.default_rng(first_id)
    total = int(args.rate * args.seconds) // BATCH * BATCH
    vectors = rng.standard_normal((BATCH, DIM), dtype=np.float32).astype(np.float16)
    started = time.perf_counter()
    for b, start in enumerate(range(first_id, first_id + total, BATCH)):
        due = started + b * BATCH / args.rate
        time.sleep(max(0.0, due - time.perf_counter()))
        writer.add([f"p{i:09d}" for i in range(start, start + BATCH)], np.zeros(BATCH, np.int16), vectors)
    produced, stalled = time.perf_counter() - started, writer.stalled_seconds
    writer.flush()
    writer.close()
    seconds = time.perf_counter() - started
    commit_seconds = [s for _, s in writer.commits]
    return {
        "rows": writer.rows_written,
        "rows_per_s": total / produced,  # while producing: the pace the model could keep
        "rows_per_s_with_drain": writer.rows_written / seconds,  # counting the last commits' wait
        "offered_rows_per_s": args.rate,
        "stalled_seconds": stalled,  # the producer waiting for a commit while producing
        "drain_seconds": seconds - produced,  # the last chunk's commit, after the producer finished
        "commits": len(writer.commits),
        "median_commit_rows": statistics.median(r for r, _ in writer.commits),
        "median_commit_s": statistics.median(commit_seconds),
        "longest_commit_s": max(commit_seconds),
        "versions_added": catalog.dataset(TABLE).version - versions,
    }


def _produce_apart(spec: dict[str, Any]) -> dict[str, Any]:
    """`produce` in a process of its own (another embed run), at spec's rate, sized by rate."""
    offered = argparse.Namespace(rate=spec["rate"], seconds=spec["seconds"])
    return produce(Catalog.open(Path(spec["store"])), offered, spec["first_id"], sized_by_rate=True)


def concurrent(catalog: Catalog, args: Any, writers: int, first_id: int) -> dict[str, Any]:
    """`writers` producer processes at once, each offering args.rate / writers, into one table."""
    before = catalog.dataset(TABLE).count_rows()
    spacing = 10**9  # each writer's ids: disjoint
    specs = [
        {
            "store": str(catalog.root),
            "rate": args.rate / writers,
            "seconds": args.seconds,
            "first_id": first_id + w * spacing,
        }
        for w in range(writers)
    ]
    command = [sys.executable, __file__, "--producer"]
    processes = [
        subprocess.Popen([*command, json.dumps(s)], stdout=subprocess.PIPE, text=True) for s in specs
    ]
    reports = []
    for process in processes:
        out, _ = process.communicate(timeout=args.seconds * 20 + 600)
        assert process.returncode == 0, f"producer process failed ({process.returncode})"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    added = catalog.dataset(TABLE).count_rows() - before
    assert added == sum(r["rows"] for r in reports), f"{added} rows added, writers reported {reports}"
    return {
        "writers": writers,
        "rows": added,
        "offered_rows_per_s": args.rate,
        "rows_per_s": sum(r["rows_per_s"] for r in reports),
        "stalled_seconds": max(r["stalled_seconds"] for r in reports),
        "commits": sum(r["commits"] for r in reports),
        "median_commit_s": statistics.median(r["median_commit_s"] for r in reports),
        "longest_commit_s": max(r["longest_commit_s"] for r in reports),
        "per_writer": reports,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--producer"]:  # one of --writers' processes
        print(json.dumps(_produce_apart(json.loads(argv[1]))))
        return 0
    args = parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": harness.machine(),
        "args": vars(args),
        "sizes": [],
    }
    rng = np.random.default_rng(0)
    with harness.scratch("embed-writer-") as tmp:
        catalog = Catalog.create(tmp / "store")
        catalog.create_table(TABLE, embedding_schema(PROVENANCE))
        have, next_id = 0, 0
        for size in sizes:
            harness.say(f"pre-filling to {size:,} rows")
            prefill(catalog, size, have, rng)
            have = size
            entry: dict[str, Any] = {"table_rows": catalog.dataset(TABLE).count_rows()}
            for label, by_rate in (("fixed_4096", False), ("sized_by_rate", True)):
                harness.say(f"{size:,} rows: {label}")
                entry[label] = produce(catalog, args, next_id, by_rate)
                next_id += entry[label]["rows"]
            entry["writers"] = []
            for writers in sorted(int(w) for w in args.writers.split(",") if int(w) > 1):
                harness.say(f"{size:,} rows: {writers} writer processes, sized by rate")
                entry["writers"].append(concurrent(catalog, args, writers, next_id))
                next_id += writers * 10**9
            result["sizes"].append(entry)
            harness.write_json(args.out, result)
    print(f"\n{'table rows':>12} {'commits':>15} {'rows/s':>17} {'stalled s':>15} {'median commit s':>17}")
    for entry in result["sizes"]:
        fixed, sized = entry["fixed_4096"], entry["sized_by_rate"]
        print(
            f"{entry['table_rows']:>12,} {fixed['commits']:>7} -> {sized['commits']:<6} "
            f"{fixed['rows_per_s']:>8,.0f} -> {sized['rows_per_s']:<7,.0f} "
            f"{fixed['stalled_seconds']:>6.2f} -> {sized['stalled_seconds']:<6.2f} "
            f"{fixed['median_commit_s']:>7.3f} -> {sized['median_commit_s']:<7.3f}"
        )
    print("(fixed 4,096-row commits -> commits sized by rate)")
    for entry in result["sizes"]:
        for run in entry["writers"]:
            print(
                f"{entry['table_rows']:>12,} rows, {run['writers']} writers sized by rate: "
                f"{run['rows_per_s']:,.0f} rows/s of {run['offered_rows_per_s']:,.0f} offered, "
                f"stalled {run['stalled_seconds']:.2f} s, median commit {run['median_commit_s']:.3f} s"
            )
    harness.write_json(args.out, result)
    harness.say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
