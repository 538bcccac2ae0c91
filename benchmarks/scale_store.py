"""Store at scale: what one keyed write costs as an embedding table grows, and how fast writers fill it.

Sections (one function each; later ones may add fragments/versions, scan rates, IVF-PQ):
  keyed_commit: seconds of one 4,096-row keyed commit into an embedding table (the store's schema,
      256-d float16 vectors, row_key = "<24 hex>:0") pre-filled to each size with plain appends of
      generated rows: the old path (one `merge_insert(row_key)` per commit, what keyed_writes did up to
      #24), the new path (`keyed_writes.insert_missing`: claims + append) and a plain Lance append (no
      key check, the floor). Each path: one warm-up commit (reported apart: the new path's first commit
      in a process reads the table's key column once), then the median of --commits commits.
  writers: 1, 2 and 4 writer processes inserting new keys (disjoint, 4,096-row commits) into the
      largest table at once, each for --seconds after its warm-up commit; sustained rows/s = rows
      inserted by all / wall seconds, old path and new path; the table then holds one row per key.

Writes benchmarks/results/scale_store.json and benchmarks/results/scale_store_commit_cost.png (commit
seconds against table size), prints a summary and the targets (keyed commit cost at the largest size
<= 2x that at the smallest; >= 50,000 rows/s sustained into the largest table with 1, 2 and 4 writers).
The tables live in a temporary folder (--tmp, default the system's), removed at the end.

    .venv/bin/python benchmarks/scale_store.py [--sizes 100000,1000000,10000000] [--commits 8]
        [--writers 1,2,4] [--seconds 20] [--dim 256] [--tmp DIR] [--out PATH]

10^7 rows of 256-d float16 take about 5.5 GB on disk. --smoke: sizes 2,000 and 8,000, 16-d vectors,
512-row commits, 2 writers for 1 s.
"""

from __future__ import annotations

import argparse
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

from embedstore.storage import keyed_writes
from embedstore.storage.embedding_tables import Provenance, embedding_schema

RESULTS = harness.RESULTS
TABLE = "emb__bench_scale"
FILL_CHUNK = 1_000_000  # rows per plain append while pre-filling


def schema(dim: int) -> pa.Schema:
    given = Provenance.given("bench.scale", dim)
    return embedding_schema(Provenance(**{**given.__dict__, "store_dtype": "float16"}))


# -- generated rows -------------------------------------------------------------------------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64, so distinct inputs give distinct keys."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def row_keys(start: int, n: int) -> tuple[pa.Array, pa.Array]:
    """(row_key, tile_id) of rows start..start+n: 24 hex digits (like a tile id) + ":0", distinct."""
    i = np.arange(start, start + n, dtype=np.uint64)
    raw = np.empty((n, 12), np.uint8)
    raw[:, :8] = _mix(i).astype(">u8").view(np.uint8).reshape(n, 8)
    raw[:, 8:] = _mix(i ^ np.uint64(0x5DEECE66D)).astype(">u8").view(np.uint8).reshape(n, 8)[:, :4]
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    text = np.empty((n, 26), np.uint8)
    text[:, 0:24:2], text[:, 1:24:2] = digits[raw >> 4], digits[raw & 15]
    text[:, 24], text[:, 25] = ord(":"), ord("0")

    def strings(width: int) -> pa.Array:
        data = np.ascontiguousarray(text[:, :width]).tobytes()
        offsets = (np.arange(n + 1, dtype=np.int32) * width).tobytes()
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))

    return strings(26), strings(24)


class Rows:
    """Generated rows of the embedding schema; the vectors come from one random block (their values do
    not change what a write costs)."""

    def __init__(self, dim: int, block: int = 65_536) -> None:
        self.schema, self.dim = schema(dim), dim
        rng = np.random.default_rng(0)
        self.block = rng.standard_normal(block * dim, dtype=np.float32).astype(np.float16)

    def table(self, start: int, n: int) -> pa.Table:
        keys, tiles = row_keys(start, n)
        rows = len(self.block) // self.dim
        if n <= rows // 2:  # a commit's rows: a slice of the block (cheap, as a model's output would be)
            at = (start % (rows - n)) * self.dim
            values = self.block[at : at + n * self.dim]
        else:
            values = np.resize(self.block, n * self.dim)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(values), self.dim)
        views = pa.array(np.zeros(n, np.int16))
        return pa.table([keys, tiles, views, vectors], schema=self.schema)


def fill(path: Path, rows: Rows, start: int, stop: int) -> float:
    """Append generated rows start..stop with plain appends (no key check); returns seconds."""
    began = time.perf_counter()
    for at in range(start, stop, FILL_CHUNK):
        lance.write_dataset(rows.table(at, min(FILL_CHUNK, stop - at)), str(path), mode="append")
    return time.perf_counter() - began


# -- the write paths ------------------------------------------------------------------------------------


def old_insert(path: Path, rows: pa.Table) -> int:
    """The keyed write before #24: one merge_insert on the declared key, its cost grows with the table."""

    def commit() -> dict:
        builder = lance.dataset(str(path)).merge_insert("row_key").when_not_matched_insert_all()
        builder = builder.conflict_retries(keyed_writes.CONFLICT_RETRIES)
        return builder.retry_timeout(keyed_writes._RETRY_TIMEOUT).execute(rows)

    return int(keyed_writes._retrying(commit)["num_inserted_rows"])


def new_insert(path: Path, rows: pa.Table) -> int:
    return keyed_writes.insert_missing(path, TABLE, rows)


def plain_append(path: Path, rows: pa.Table) -> int:
    lance.write_dataset(rows, str(path), mode="append")
    return rows.num_rows


PATHS = {"old": old_insert, "new": new_insert, "append": plain_append}


# -- section: keyed commit cost against table size --------------------------------------------------------


def keyed_commit(args: argparse.Namespace, root: Path, rows: Rows) -> dict[str, Any]:
    """Per size: warm-up and median seconds of one `args.batch`-row commit, for each path."""
    keyed_writes.create_table(root, TABLE, rows.schema)
    path = root / f"{TABLE}.lance"
    filled, fresh = 0, 10**12  # pre-filled keys count up from 0, committed ones down from here
    results = []
    for size in args.sizes:
        seconds = fill(path, rows, filled, size)
        filled = size
        harness.say(f"{size:,} rows pre-filled in {seconds:.1f} s")
        entry: dict[str, Any] = {"size": size, "fill_seconds": seconds}
        for name, write in PATHS.items():
            times = []
            for _ in range(args.commits + 1):
                batch = rows.table(fresh, args.batch)
                fresh += args.batch
                began = time.perf_counter()
                assert write(path, batch) == args.batch
                times.append(time.perf_counter() - began)
            entry[name] = {"warmup": times[0], "median": float(np.median(times[1:])), "times": times[1:]}
            harness.say(f"  {name:<6} warm-up {times[0]:.3f} s, median {entry[name]['median']:.4f} s")
        entry["rows_after"] = lance.dataset(str(path)).count_rows()
        results.append(entry)
    return {"batch": args.batch, "sizes": results, "table": str(path)}


# -- section: concurrent writers into the largest table ------------------------------------------------


def writers(args: argparse.Namespace, path: Path) -> list[dict[str, Any]]:
    """1, 2, 4 ... writer processes for each path; sustained rows/s. Keys disjoint between writers."""
    results = []
    base = 2 * 10**12
    for path_name in ("old", "new"):
        for count in args.writers:
            before = lance.dataset(str(path)).count_rows()
            barrier = path.parent / f"barrier-{path_name}-{count}"
            barrier.mkdir()
            command = [sys.executable, __file__, "--writer", "--dim", str(args.dim)]
            processes = [
                subprocess.Popen(
                    [
                        *command,
                        json.dumps(
                            {
                                "path": str(path),
                                "way": path_name,
                                "start": base + w * 10**10,
                                "batch": args.batch,
                                "seconds": args.seconds,
                                "barrier": str(barrier),
                                "count": count,
                            }
                        ),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for w in range(count)
            ]
            reports = []
            for process in processes:
                out, _ = process.communicate(timeout=args.seconds * 20 + 600)
                assert process.returncode == 0, f"writer failed ({process.returncode})"
                reports.append(json.loads(out.strip().splitlines()[-1]))
            base += 10**11
            wall = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
            rows_in = sum(r["rows"] for r in reports)
            after = lance.dataset(str(path)).count_rows()
            assert after - before == rows_in + sum(r["warmup_rows"] for r in reports)
            entry = {
                "path": path_name,
                "writers": count,
                "rows": rows_in,
                "commits": sum(r["commits"] for r in reports),
                "wall_seconds": wall,
                "rows_per_second": rows_in / wall,
                "warmup_seconds": [r["warmup_seconds"] for r in reports],
                "table_rows_after": after,
            }
            harness.say(
                f"  {path_name} x{count}: {entry['rows_per_second']:,.0f} rows/s "
                f"({rows_in:,} rows in {wall:.1f} s; warm-up {max(entry['warmup_seconds']):.1f} s)"
            )
            results.append(entry)
    return results


def writer_process(spec: dict[str, Any], dim: int) -> None:
    """One writer: a warm-up commit, the barrier, then commits until `seconds` have passed."""
    rows, path, write = Rows(dim), Path(spec["path"]), PATHS[spec["way"]]
    at = spec["start"]
    began = time.perf_counter()
    warmup = write(path, rows.table(at, spec["batch"]))
    warmup_seconds = time.perf_counter() - began
    at += spec["batch"]
    Path(spec["barrier"], str(os.getpid())).touch()
    while len(os.listdir(spec["barrier"])) < spec["count"]:
        time.sleep(0.01)
    began = time.time()
    inserted = commits = 0
    while time.time() - began < spec["seconds"]:
        inserted += write(path, rows.table(at, spec["batch"]))
        at += spec["batch"]
        commits += 1
    report = {
        "rows": inserted,
        "commits": commits,
        "began": began,
        "ended": time.time(),
        "warmup_rows": warmup,
        "warmup_seconds": warmup_seconds,
    }
    print(json.dumps(report))


# -- targets, plot, summary ------------------------------------------------------------------------------


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = result["keyed_commit"]["sizes"]
    first, last = sizes[0]["new"]["median"], sizes[-1]["new"]["median"]
    found = [
        {
            "target": f"keyed commit at {sizes[-1]['size']:,} <= 2x at {sizes[0]['size']:,} rows",
            "value": round(last / first, 2),
            "pass": last <= 2 * first,
        }
    ]
    for entry in result["writers"]:
        if entry["path"] == "new":
            found.append(
                {
                    "target": f">= 50,000 rows/s into {sizes[-1]['size']:,} rows, "
                    f"{entry['writers']} writer(s)",
                    "value": round(entry["rows_per_second"]),
                    "pass": entry["rows_per_second"] >= 50_000,
                }
            )
    return found


def plot(result: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["keyed_commit"]["sizes"]
    figure, axes = plt.subplots(figsize=(6, 4))
    labels = {"old": "old: merge_insert", "new": "new: claims + append", "append": "plain append"}
    for name, label in labels.items():
        axes.plot([s["size"] for s in sizes], [s[name]["median"] for s in sizes], "o-", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("rows in the table")
    axes.set_ylabel(f"seconds per {result['keyed_commit']['batch']:,}-row commit (median)")
    axes.set_title("keyed commit cost against table size")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def summary(result: dict[str, Any]) -> None:
    print(f"\n{'rows':>12} {'old s':>8} {'new s':>8} {'append s':>9}   (median of one commit)")
    for s in result["keyed_commit"]["sizes"]:
        old, new, append = (s[name]["median"] for name in ("old", "new", "append"))
        print(f"{s['size']:>12,} {old:>8.4f} {new:>8.4f} {append:>9.4f}")
    print(f"\n{'path':<6} {'writers':>7} {'rows/s':>10}")
    for w in result["writers"]:
        print(f"{w['path']:<6} {w['writers']:>7} {w['rows_per_second']:>10,.0f}")
    harness.print_targets(result["targets"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--commits", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--writers", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale_store.json")
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        writer_process(json.loads(args.spec), args.dim)
        return 0
    if args.smoke:
        args.sizes, args.commits, args.batch, args.writers, args.seconds, args.dim = (
            "2000,8000",
            3,
            512,
            "1,2",
            1.0,
            16,
        )
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    args.writers = [int(w) for w in str(args.writers).split(",")]
    result: dict[str, Any] = {
        "machine": harness.machine(lance=lance.__version__),
        "smoke": args.smoke,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "spec"},
    }
    with harness.scratch("scale-store-", args.tmp) as root:
        rows = Rows(args.dim)
        result["keyed_commit"] = keyed_commit(args, root, rows)
        harness.say(f"writers into {args.sizes[-1]:,} rows")
        result["writers"] = writers(args, Path(result["keyed_commit"]["table"]))
    result["targets"] = targets(result)
    harness.write_json(args.out, result)
    png = plot(result, args.out.with_name(args.out.stem + "_commit_cost.png"))
    summary(result)
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
