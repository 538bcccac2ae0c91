"""Past one machine (issue #24, item 5): the claims write path on an `s3://` store and from Ray actors,
and a projection to 2x10^8 tiles from the figures measured.

Sections:
  commit: seconds of one --batch-row `keyed_writes.insert_missing` (claim, append, release) into an
      embedding table (scale_store's rows: 256-d float16, row_key "<24 hex>:0") pre-filled with plain
      appends to each --sizes size, on a local folder and on a real S3-compatible server on localhost
      (tests/s3_server.py: moto in server mode, a Python process on the same cores: the object-store
      protocol's cost, an upper bound on this machine, not a network's). Warm-up (the process's first
      write: it reads the key column) apart, then the median of --commits commits.
  writers: 1 and 4 writer processes inserting disjoint new keys into the largest table, local and s3,
      for --seconds each after their warm-up: sustained rows/s.
  ray: --actors (4, 8) local Ray actors, each calling insert_missing (as the Ray engines' writers do:
      one keyed write per block) with --actor-rows rows in --batch-row commits into one local table,
      each actor's keys overlapping the next one's by half: rows/s, and exactness (rows = distinct keys
      = the union of the keys offered; no claim left).
  compaction: `optimize.compact_files()` of the table the ray section wrote (many small fragments):
      rows/s rewritten.
  projection: from those figures, 2x10^8 tiles (10,000 slides x 20,000 tiles): see `projection`.

Writes benchmarks/results/scale_cluster.json, prints a summary. Needs the ray extra and moto[server].

    python benchmarks/scale_cluster.py [--sizes 100000,1000000] [--commits 6] [--seconds 15]
        [--actors 4,8] [--actor-rows 40960]
    python benchmarks/scale_cluster.py --smoke
"""

from __future__ import annotations

import json
import os
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
from scale_store import TABLE, Rows, fill

from embedstore.core.location import ObjectPath, store_location
from embedstore.storage import keyed_writes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.s3_server

RESULTS = harness.RESULTS / "scale_cluster.json"
COHORT_TILES = 10_000 * 20_000
KEY_BYTES = 35  # a key held in a writer's key set (keyed_writes._KeySet; documented in README)
GPU_TILES_PER_S = (3_000, 20_000)  # one GPU: ViT-L .. small CNNs (issue #24)


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = harness.parser(__doc__)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--commits", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--writers", default="1,4")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--actors", default="4,8")
    parser.add_argument("--actor-rows", type=int, default=40_960)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--writer", help=argparse_suppress())
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.commits, args.batch, args.dim = "2000", 2, 512, 16
        args.writers, args.seconds, args.actors, args.actor_rows = "1,2", 1.0, "2", 2048
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    args.writers = [int(s) for s in str(args.writers).split(",")]
    args.actors = [int(s) for s in str(args.actors).split(",")]
    return args


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


def _load() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _table(root: str) -> Path | ObjectPath:
    return store_location(root) / f"{TABLE}.lance"


# -- commit cost, local and s3 ------------------------------------------------------------------------


def commit_cost(args: Any, root: str, rows: Rows) -> list[dict[str, Any]]:
    keyed_writes.create_table(store_location(root), TABLE, rows.schema)
    path = _table(root)
    filled, fresh, out = 0, 10**12, []
    for size in args.sizes:
        seconds = fill(path, rows, filled, size)  # type: ignore[arg-type]  # str() of either reads alike
        filled = size
        times = []
        for _ in range(args.commits + 1):
            began = time.perf_counter()
            assert keyed_writes.insert_missing(path, TABLE, rows.table(fresh, args.batch)) == args.batch
            times.append(time.perf_counter() - began)
            fresh += args.batch
        entry = {
            "size": size,
            "fill_seconds": seconds,
            "warmup": times[0],
            "median": float(np.median(times[1:])),
            "times": times[1:],
            "load": _load(),
        }
        harness.say(f"  {root[:5]} {size:,}: warm-up {times[0]:.2f} s, median {entry['median']:.3f} s")
        out.append(entry)
    return out


def writers(args: Any, root: str) -> list[dict[str, Any]]:
    """Writer processes with disjoint keys into the table at `root` (as filled by commit_cost)."""
    out, base = [], 2 * 10**12
    for count in args.writers:
        barrier = args.scratch / f"barrier-{count}-{base}"
        barrier.mkdir()
        spec = {
            "root": root,
            "batch": args.batch,
            "seconds": args.seconds,
            "barrier": str(barrier),
            "count": count,
        }
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--dim",
                    str(args.dim),
                    "--writer",
                    json.dumps({**spec, "start": base + w * 10**10}),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for w in range(count)
        ]
        reports = []
        for process in processes:
            stdout, _ = process.communicate(timeout=args.seconds * 20 + 600)
            assert process.returncode == 0, f"writer failed ({process.returncode})"
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
        for entry in barrier.iterdir():
            entry.unlink()
        barrier.rmdir()
        base += 10**11
        wall = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
        rows_in = sum(r["rows"] for r in reports)
        entry = {
            "writers": count,
            "rows": rows_in,
            "commits": sum(r["commits"] for r in reports),
            "wall_seconds": wall,
            "rows_per_second": rows_in / wall,
            "commits_per_second": sum(r["commits"] for r in reports) / wall,
            "warmup_seconds": [r["warmup_seconds"] for r in reports],
            "load": _load(),
        }
        harness.say(
            f"  {root[:5]} x{count}: {entry['rows_per_second']:,.0f} rows/s, "
            f"{entry['commits_per_second']:.1f} commits/s"
        )
        out.append(entry)
    return out


def writer_process(spec: dict[str, Any], dim: int) -> None:
    rows, path, at = Rows(dim), _table(spec["root"]), spec["start"]
    began = time.perf_counter()
    keyed_writes.insert_missing(path, TABLE, rows.table(at, spec["batch"]))
    warmup = time.perf_counter() - began
    at += spec["batch"]
    Path(spec["barrier"], str(os.getpid())).touch()
    while len(os.listdir(spec["barrier"])) < spec["count"]:
        time.sleep(0.01)
    began = time.time()
    inserted = commits = 0
    while time.time() - began < spec["seconds"]:
        inserted += keyed_writes.insert_missing(path, TABLE, rows.table(at, spec["batch"]))
        at += spec["batch"]
        commits += 1
    print(
        json.dumps(
            {
                "rows": inserted,
                "commits": commits,
                "began": began,
                "ended": time.time(),
                "warmup_seconds": warmup,
            }
        )
    )


# -- Ray actors into one table ------------------------------------------------------------------------


def ray_actors(args: Any, root: Path) -> list[dict[str, Any]]:
    import ray

    @ray.remote(num_cpus=0)
    class Writer:
        def __init__(self, path: str, dim: int) -> None:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            self.path, self.rows = Path(path), Rows(dim)

        def write(self, start: int, count: int, batch: int) -> dict[str, float]:
            began, inserted = time.time(), 0
            for at in range(start, start + count, batch):
                n = min(batch, start + count - at)
                inserted += keyed_writes.insert_missing(self.path, TABLE, self.rows.table(at, n))
            return {"began": began, "ended": time.time(), "inserted": inserted}

    here = str(Path(__file__).resolve().parent)
    ray.init(
        num_cpus=max(args.actors),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "PYTHONPATH": os.pathsep.join([here, *sys.path[:1], os.environ.get("PYTHONPATH", "")])
            }
        },
    )
    out = []
    try:
        rows = Rows(args.dim)
        for count in args.actors:
            name = f"ray{count}"
            folder = root / name
            folder.mkdir()
            keyed_writes.create_table(folder, TABLE, rows.schema)
            path = folder / f"{TABLE}.lance"
            fill(path, rows, 0, 10_000)
            actors = [Writer.remote(str(path), args.dim) for _ in range(count)]
            ray.get(
                [a.write.remote(10**9 + i * args.batch, args.batch, args.batch) for i, a in enumerate(actors)]
            )  # warm-up
            half = args.actor_rows // 2
            base = 5 * 10**12
            reports = ray.get(
                [a.write.remote(base + i * half, args.actor_rows, args.batch) for i, a in enumerate(actors)]
            )
            for actor in actors:
                ray.kill(actor)
            wall = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
            union = half * (count - 1) + args.actor_rows
            table = lance.dataset(str(path)).to_table(columns=["row_key"])
            keys = table.column("row_key")
            distinct = len(pa.compute.unique(keys))
            claims_left = lance.dataset(str(keyed_writes.claims_path(path))).count_rows()
            inserted = sum(r["inserted"] for r in reports)
            entry = {
                "actors": count,
                "rows_offered": count * args.actor_rows,
                "rows_inserted": inserted,
                "keys_union": union,
                "wall_seconds": wall,
                "rows_per_second": inserted / wall,
                "table_rows": table.num_rows,
                "distinct_keys": distinct,
                "exact": inserted == union
                and table.num_rows == distinct == 10_000 + count * args.batch + union
                and claims_left == 0,
                "fragments": len(lance.dataset(str(path)).get_fragments()),
                "load": _load(),
            }
            began = time.perf_counter()
            lance.dataset(str(path)).optimize.compact_files()
            entry["compaction_seconds"] = time.perf_counter() - began
            entry["compaction_rows_per_second"] = table.num_rows / entry["compaction_seconds"]
            harness.say(
                f"  ray x{count}: {entry['rows_per_second']:,.0f} rows/s, exact {entry['exact']}, "
                f"compaction {entry['compaction_seconds']:.1f} s"
            )
            out.append(entry)
    finally:
        ray.shutdown()
    return out


# -- projection ---------------------------------------------------------------------------------------


def projection(result: dict[str, Any], batch: int, dim: int) -> dict[str, Any]:
    """2x10^8 tiles of one backbone from the figures above. Assumptions (stated in the JSON): one table
    per backbone; commits of `batch` rows; the aggregate rate one table sustained with the most writers
    measured holds at 2x10^8 rows (commit cost measured flat to 10^7 in scale_store); key-set memory and
    the first write's key read grow linearly with the table; IVF-PQ with m = dim/8 and nlist = 4 sqrt(n)."""
    n = COHORT_TILES
    local, s3 = result["writers"]["local"][-1], result["writers"]["s3"][-1]
    big_local, big_s3 = result["commit"]["local"][-1], result["commit"]["s3"][-1]
    ray = result["ray"][-1] if result["ray"] else None
    m = dim // 8
    nlist = int(4 * n**0.5)
    out: dict[str, Any] = {
        "tiles": n,
        "commits": -(-n // batch),
        "local_rows_per_s_one_table": local["rows_per_second"],
        "s3_rows_per_s_one_table": s3["rows_per_second"],
        "days_to_write_local": n / local["rows_per_second"] / 86_400,
        "days_to_write_s3": n / s3["rows_per_second"] / 86_400,
        "commits_per_s_local": local["commits_per_second"],
        "commits_per_s_s3": s3["commits_per_second"],
        "gpus_one_table_keeps_up_with": {
            str(rate): local["rows_per_second"] / rate for rate in GPU_TILES_PER_S
        },
        "key_set_bytes_per_writer": KEY_BYTES * n,
        "first_write_key_read_s_local": big_local["warmup"] / big_local["size"] * n,
        "first_write_key_read_s_s3": big_s3["warmup"] / big_s3["size"] * n,
        "ivfpq_m": m,
        "ivfpq_nlist": nlist,
        "ivfpq_bytes": (m + 16) * n + nlist * dim * 4,
        "vectors_bytes_float16": n * dim * 2,
    }
    if ray:
        out["compaction_hours"] = n / ray["compaction_rows_per_second"] / 3600
        out["ray_rows_per_s"] = ray["rows_per_second"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.writer:
        writer_process(json.loads(args.writer), args.dim)
        return 0
    from tests.s3_server import new_prefix, s3_server

    result: dict[str, Any] = {"smoke": args.smoke, "machine": harness.machine(), "load_start": _load()}
    result["args"] = {k: v for k, v in vars(args).items() if k != "writer" and not isinstance(v, Path)}
    rows = Rows(args.dim)
    with harness.scratch("scale-cluster-") as tmp, s3_server():
        args.scratch = tmp
        roots = {"local": str(tmp / "local"), "s3": new_prefix("scale-cluster")}
        Path(roots["local"]).mkdir()
        result["commit"], result["writers"] = {}, {}
        for where, root in roots.items():
            harness.say(f"commit cost, {where}")
            result["commit"][where] = commit_cost(args, root, rows)
            harness.write_json(args.out, result)
            harness.say(f"writers, {where}")
            result["writers"][where] = writers(args, root)
            harness.write_json(args.out, result)
        harness.say("ray actors")
        result["ray"] = ray_actors(args, tmp)
    result["projection"] = projection(result, args.batch, args.dim)
    result["load_end"] = _load()
    harness.write_json(args.out, result)
    summary(result)
    harness.say(f"wrote {args.out}")
    return 0


def summary(result: dict[str, Any]) -> None:
    print(f"\n{'where':>6} {'rows':>10} {'first write s':>14} {'commit s':>9}")
    for where, entries in result["commit"].items():
        for e in entries:
            print(f"{where:>6} {e['size']:>10,} {e['warmup']:>14.2f} {e['median']:>9.3f}   load {e['load']}")
    for where, entries in result["writers"].items():
        for e in entries:
            print(
                f"{where:>6} x{e['writers']} writers: {e['rows_per_second']:>9,.0f} rows/s "
                f"{e['commits_per_second']:.1f} commits/s   load {e['load']}"
            )
    for e in result["ray"]:
        print(
            f"ray x{e['actors']} actors: {e['rows_per_second']:,.0f} rows/s, exact {e['exact']} "
            f"({e['table_rows']:,} rows, {e['distinct_keys']:,} keys), compaction of {e['fragments']} "
            f"fragments {e['compaction_seconds']:.1f} s   load {e['load']}"
        )
    print(json.dumps(result["projection"], indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
