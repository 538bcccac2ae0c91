"""Probe and heads on 10^6 labelled rows (issue #24, item 3): wall time and peak RSS as the task grows.

A store is grown to each --sizes size with plain Lance appends of the store's own schemas: generated tiles
(metadata only; one `slide` per --tiles-per-slide tiles, 1,000: folds and validation split by slide),
their 256-d float16 vectors (view 0) and a label each (task `bench`, 20 % `1-pos`). At each size, each in
a fresh child process (its VmHWM is its own peak):
  probe  `store.probe("bench", backbones=BACKBONE)` with ProbeOptions' defaults (kNN, prototype and
         linear probes, 5 folds x 2 seeds);
  heads  `heads.train(store, BACKBONE, "bench", epochs=1)`: a linear head, one epoch, streamed;
wall seconds, peak RSS (VmHWM) and the RSS right after the imports. A child that runs past
--child-timeout is stopped and recorded as such. The heads target is the README's: peak RSS < 1.5 GB,
flat in the number of rows. The probe states no bound: it holds the task's vectors as float32 in memory
(n x dim x 4 bytes, 1 GB at 10^6 x 256) and its kNN is an exact all-pairs search across folds (O(n^2)),
so what it measured is reported with its growth from the smallest size.

    python benchmarks/scale_probe_heads.py [--sizes 100000,1000000] [--child-timeout 3600]
    python benchmarks/scale_probe_heads.py --smoke     # seconds: 3,000 rows
"""

from __future__ import annotations

import dataclasses
import json
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

RESULTS = harness.RESULTS / "scale_probe_heads.json"
DIM = 256
FILL_ROWS = 250_000
TILES_PER_SLIDE = 1000
TASK = "bench"
BACKBONE = "scale_bench"
HEADS_RSS_GB = 1.5  # README: a whole heads.train call, peak RSS < 1.5 GB
KINDS = ("heads", "probe")


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = harness.parser(__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="labelled rows, comma-separated")
    parser.add_argument("--child-timeout", type=float, default=3600.0, help="seconds per measurement")
    parser.add_argument("--tiles-per-slide", type=int, default=TILES_PER_SLIDE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=KINDS, help=argparse_hidden())
    parser.add_argument("--store", type=Path, help=argparse_hidden())
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.tiles_per_slide = "3000", 50
    return args


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def provenance() -> Any:
    return dataclasses.replace(harness.bench_provenance(DIM), backbone=BACKBONE)


def tiles_rows(start: int, count: int, per_slide: int) -> pa.Table:
    from embedstore.core.schema import TILES_SCHEMA

    index = np.arange(start, start + count)
    columns: dict[str, Any] = {field.name: pa.nulls(count, field.type) for field in TILES_SCHEMA}
    columns.update(
        tile_id=pa.array([f"g{i:010d}" for i in index]),
        source_id=pa.array([f"src{i // per_slide}" for i in index]),
        slide=pa.array([f"slide{i // per_slide}" for i in index]),
        x=pa.array((index % 141) * 256),
        y=pa.array((index // 141 % 141) * 256),
        level=pa.array(np.zeros(count, np.int32)),
        size0=pa.array(np.full(count, 256)),
        width=pa.array(np.full(count, 256, np.int32)),
        height=pa.array(np.full(count, 256, np.int32)),
        dataset=pa.array(["cohort"] * count),
    )
    return pa.table([columns[f.name] for f in TILES_SCHEMA], schema=TILES_SCHEMA)


def label_rows(start: int, count: int, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    from embedstore.core.schema import LABELS_SCHEMA, label_key

    ids = [f"g{i:010d}" for i in range(start, start + count)]
    positive = rng.random(count) < 0.2
    table = pa.table(
        [
            pa.array([label_key(TASK, t) for t in ids]),
            pa.array([TASK] * count),
            pa.array(ids),
            pa.array(np.where(positive, "1-pos", "0-neg").astype(object)),
            pa.array(["import"] * count),
        ],
        schema=LABELS_SCHEMA,
    )
    return table, positive


def grow(root: Path, have: int, size: int, per_slide: int, rng: np.random.Generator) -> None:
    """Append tiles, labels and vectors (positives shifted along one direction, so probes learn) from
    `have` to `size` rows."""
    from embedstore.core.schema import LABELS, TILES
    from embedstore.storage.embedding_tables import table_name

    for start in range(have, size, FILL_ROWS):
        count = min(FILL_ROWS, size - start)
        labels, positive = label_rows(start, count, rng)
        vectors = harness.embedding_rows(provenance(), start, count, rng, digits=10)
        shifted = vectors.column("vector").combine_chunks().flatten().to_numpy().reshape(count, DIM)
        shifted = shifted.astype(np.float32)
        shifted[positive, :8] += 1.0
        column = pa.FixedSizeListArray.from_arrays(pa.array(shifted.ravel().astype(np.float16)), DIM)
        vectors = vectors.set_column(vectors.schema.get_field_index("vector"), "vector", column)
        lance.write_dataset(tiles_rows(start, count, per_slide), str(root / f"{TILES}.lance"), mode="append")
        lance.write_dataset(labels, str(root / f"{LABELS}.lance"), mode="append")
        lance.write_dataset(vectors, str(root / f"{table_name(BACKBONE)}.lance"), mode="append")


def child(kind: str, store_path: Path) -> dict[str, Any]:
    """One measurement in this (fresh) process: wall seconds and peak RSS."""
    import embedstore

    if kind == "heads":
        import heads
    imported = harness.rss_bytes("VmRSS")
    store = embedstore.open(store_path)
    started = time.perf_counter()
    if kind == "probe":
        report = store.probe(TASK, backbones=BACKBONE)
        detail = {"folds": len(report.to_dict().get("rows", []))}
    else:
        result = heads.train(store, BACKBONE, TASK, epochs=1, overwrite=True)
        detail = {"validation": result.validation}
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_bytes": harness.rss_bytes("VmHWM"),
        "rss_after_imports_bytes": imported,
        **detail,
    }


def measure(kind: str, store: Path, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--store", str(store)]
    load = _load()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "timeout_s": timeout, "load_before": load}
    if done.returncode != 0:
        return {"failed": done.stderr.strip().splitlines()[-1:], "load_before": load}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": load, "load_after": _load()}


def _load() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.store)))
        return 0
    import embedstore
    from embedstore.storage.embedding_tables import embedding_schema, table_name

    sizes = sorted(int(size) for size in args.sizes.split(","))
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": harness.machine(),
        "args": vars(args),
        "sizes": [],
    }
    result["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    rng = np.random.default_rng(0)
    with harness.scratch("scale-probe-heads-") as tmp:
        store = embedstore.init(tmp / "store")
        store.catalog.create_table(table_name(BACKBONE), embedding_schema(provenance()))
        have = 0
        for size in sizes:
            harness.say(f"growing the store to {size:,} labelled tiles")
            grow(store.root, have, size, args.tiles_per_slide, rng)
            have = size
            entry: dict[str, Any] = {"rows": size}
            for kind in KINDS:
                harness.say(f"{kind} over {size:,} rows")
                entry[kind] = measure(kind, store.root, args.child_timeout)
                harness.write_json(args.out, {**result, "sizes": [*result["sizes"], entry]})
            result["sizes"].append(entry)
    first = result["sizes"][0]
    print(f"\n{'rows':>10} {'kind':>6} {'seconds':>9} {'peak RSS':>9} {'vs smallest':>12}  load")
    for entry in result["sizes"]:
        for kind in KINDS:
            found = entry[kind]
            if "seconds" not in found:
                print(f"{entry['rows']:>10,} {kind:>6} {'timed out' if found.get('timed_out') else 'failed'}")
                continue
            base = first[kind].get("peak_rss_bytes")
            found["rss_vs_smallest"] = found["peak_rss_bytes"] / base if base else None
            ratio = f"{found['rss_vs_smallest']:.2f}" if found["rss_vs_smallest"] else "-"
            print(
                f"{entry['rows']:>10,} {kind:>6} {found['seconds']:>9.1f} "
                f"{found['peak_rss_bytes'] / 2**30:>7.2f} G {ratio:>12}  {found['load_before']}"
            )
    heads_peaks = [e["heads"]["peak_rss_bytes"] for e in result["sizes"] if "peak_rss_bytes" in e["heads"]]
    result["targets"] = {
        "heads_peak_rss_gb": max(heads_peaks) / 2**30 if heads_peaks else None,
        "heads_met": bool(heads_peaks) and max(heads_peaks) / 2**30 < HEADS_RSS_GB,
    }
    harness.write_json(args.out, result)
    harness.say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
