"""Embedding throughput: the model alone vs the whole `embed` pipeline (read, decode, forward, write).

On the same PCam tiles (ingested from ../shared/data/pcam into a temporary store), per backbone and
precision (fp32, bf16):
  forward-only tiles/s: the model in its best eager configuration (channels_last, batch 64, autocast
      for bf16), on decoded tiles already in memory; measured just before and just after the
      end-to-end run and averaged, so both see the same machine load;
  end-to-end tiles/s: `embed(...)` on a fresh table, timed as the whole call and as the pipeline alone
      (after the model is built); ratio = end-to-end / forward-only;
  bf16 vs fp32 agreement: mean cosine of each tile's two vectors, mean overlap of its 10 nearest
      neighbours (cosine) among the embedded tiles.
  safe write path: the run's rows written again, in the run's chunk size, with plain appends and
      through the keyed path (embedstore.storage.keyed_writes); the difference as a share of the run's wall
      time (target: at most 10 %; the real cost is lower still, as commits overlap the forward pass).
Then the decode-worker / torch-thread layouts are compared on the first backbone, as ratios to its
forward-only rate. Writes benchmarks/results/embed_throughput.json and prints a table.

    .venv/bin/python benchmarks/embed_throughput.py [--tiles 2000] [--backbones a,b] [--batch-size 64]
    .venv/bin/python benchmarks/embed_throughput.py --smoke   # 8 generated tiles, a tiny timm CNN, CPU

--smoke: harness.fake_pcam tiles, harness.SMOKE_BACKBONE (a tiny timm CNN, seeded weights, no
download), batch 8, fp32, on CPU (also where there is a GPU), the first two layouts.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import harness
import numpy as np
import torch

DATA = harness.DATA / "pcam"
RESULTS = harness.RESULTS / "embed_throughput.json"
BACKBONES = (
    "tf_efficientnet_lite0.in1k",
    "tf_efficientnet_lite2.in1k",
    "resnet50.random",
    "vit_small_patch16_224.random",
)
PRECISIONS = ("fp32", "bf16")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX); without it torch emulates bf16
    at a small fraction of fp32's speed, and measuring it says nothing about the pipeline."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


TARGET = 0.9
WRITE_OVERHEAD_TARGET = 0.10
SMOKE = {
    "tiles": 8,
    "backbones": harness.SMOKE_BACKBONE,
    "batch_size": 8,
    "forward_tiles": 16,
    "layout_tiles": 8,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.parser(__doc__)
    parser.add_argument("--tiles", type=int, default=2000, help="tiles embedded per run")
    parser.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated backbone keys")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--forward-tiles", type=int, default=256, help="tiles per forward-only measurement")
    parser.add_argument("--layout-tiles", type=int, default=640, help="tiles per worker/thread layout run")
    parser.add_argument("--no-layouts", action="store_true", help="skip the worker/thread layout comparison")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models (slow to start)")
    parser.add_argument(
        "--precisions",
        default="auto",
        help="comma-separated fp32,bf16; auto: both where the CPU has native bf16 (or a GPU), else fp32",
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.device = "auto"  # `embed` on CUDA where there is one (the forward-only rates are on CPU)
    if args.smoke:
        vars(args).update(SMOKE, precisions="fp32", device="cpu")
    return args


def sample_pixels(store, size: int, n: int) -> torch.Tensor:
    """n stored tiles decoded and resized exactly as `embed` does, as uint8 (n, 3, S, S) channels_last."""
    from embedstore.embed.input import BatchSlots, DecodeTiles, Payload
    from embedstore.sources.tile_pixels import TILE_COLUMNS

    rows = store.catalog.read("tiles", columns=TILE_COLUMNS).slice(0, n).to_pylist()
    slots = BatchSlots(0, 1, len(rows), size)
    batch = DecodeTiles(slots, size, "bicubic", (), {})[Payload(rows, [(i, 0) for i in range(len(rows))])]
    return slots.pixels(batch).clone(memory_format=torch.channels_last)


def forward_rate(forward, pixels: torch.Tensor, tiles: int) -> float:
    """tiles/s of the prepared model on in-memory batches, after one warm-up batch."""
    forward(pixels)
    batches = max(2, -(-tiles // pixels.shape[0]))
    started = time.perf_counter()
    for _ in range(batches):
        forward(pixels)
    return batches * pixels.shape[0] / (time.perf_counter() - started)


def agreement(a: np.ndarray, b: np.ndarray, k: int = 10) -> dict[str, float]:
    """Mean / min cosine of paired rows, and mean overlap of each row's k nearest neighbours."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cosine = (a * b).sum(axis=1)

    def neighbours(x: np.ndarray) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, k, axis=1)[:, :k]

    na, nb = neighbours(a), neighbours(b)
    overlap = [len(np.intersect1d(na[i], nb[i])) / k for i in range(len(a))]
    return {
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "top10_overlap": float(np.mean(overlap)),
    }


def run_backbone(store, key: str, args: argparse.Namespace) -> tuple[list[dict], dict]:
    from embedstore.backbones import get_backbone
    from embedstore.embed.forward import Forward
    from embedstore.embed.local import embed
    from embedstore.embed.options import EmbedOptions
    from embedstore.storage.embedding_tables import table_name

    backbone = get_backbone(key)
    backbone.weights_sha256()  # warm the hash cache: both precisions then pay the same setup
    pixels = sample_pixels(store, backbone.spec.input_size, args.batch_size)
    model = backbone.build()
    rows, vectors = [], {}
    for precision in args.precisions:
        forward = Forward(model, torch.device("cpu"), precision, True, args.compile, args.batch_size)
        before = forward_rate(forward, pixels, args.forward_tiles)
        report = embed(
            store.catalog,
            key,
            precision=precision,
            batch_size=args.batch_size,
            limit=args.tiles,
            compile=args.compile,
            progress=False,
            device=args.device,
        )
        after = forward_rate(forward, pixels, args.forward_tiles)
        reference = (before + after) / 2
        pipeline = report.tiles_embedded / report.pipeline_seconds
        rows.append(
            {
                "backbone": key,
                "precision": precision,
                "tiles": report.tiles_embedded,
                "forward_tiles_per_s": reference,
                "forward_before": before,
                "forward_after": after,
                "e2e_tiles_per_s": report.tiles_per_s,
                "pipeline_tiles_per_s": pipeline,
                "setup_seconds": report.seconds - report.pipeline_seconds,
                "ratio_e2e": report.tiles_per_s / reference,
                "ratio_pipeline": pipeline / reference,
                "workers": report.workers,
                "threads": report.threads,
                "load_avg": os.getloadavg()[0],
            }
        )
        writes = harness.replay_cost(store, table_name(key), EmbedOptions().chunk_rows)
        rows[-1]["write_path"] = writes
        rows[-1]["write_overhead_share"] = (writes["keyed"] - writes["append"]) / report.seconds
        X, ids, _ = store.embeddings(key).to_numpy()
        vectors[precision] = X[np.argsort(ids)]
        store.catalog.drop_table(table_name(key))
        print(
            f"  {key} {precision}: forward {reference:.1f}/s, end-to-end {report.tiles_per_s:.1f}/s "
            f"(pipeline {pipeline:.1f}/s), ratio {rows[-1]['ratio_e2e']:.2f}",
            flush=True,
        )
    if set(vectors) != {"fp32", "bf16"}:
        return rows, None
    return rows, {"backbone": key, **agreement(vectors["fp32"], vectors["bf16"])}


def run_layouts(store, key: str, args: argparse.Namespace) -> list[dict]:
    """Decode workers x torch threads on `key`, per precision: who gets the cores."""
    from embedstore.backbones import get_backbone
    from embedstore.embed.forward import Forward
    from embedstore.embed.local import embed
    from embedstore.runtime import cpu_count, torch_threads
    from embedstore.storage.embedding_tables import table_name

    backbone = get_backbone(key)
    pixels = sample_pixels(store, backbone.spec.input_size, args.batch_size)
    model = backbone.build()
    cpus = cpu_count()
    layouts = [(cpus, 0), (cpus, 1), (max(1, cpus - 1), 1), (cpus, 2)]
    if args.smoke:  # inline decoding and one decode worker: each layout starts its own workers
        layouts = layouts[:2]
    rows = []
    for precision in args.precisions:
        forward = Forward(model, torch.device("cpu"), precision, True, False, args.batch_size)
        for threads, workers in layouts:
            with torch_threads(cpus):
                before = forward_rate(forward, pixels, args.forward_tiles // 2)
            report = embed(
                store.catalog,
                key,
                batch_size=args.batch_size,
                limit=args.layout_tiles,
                threads=threads,
                workers=workers,
                precision=precision,
                progress=False,
                device=args.device,
            )
            with torch_threads(cpus):
                after = forward_rate(forward, pixels, args.forward_tiles // 2)
            store.catalog.drop_table(table_name(key))
            reference = (before + after) / 2
            rows.append(
                {
                    "backbone": key,
                    "precision": precision,
                    "threads": threads,
                    "workers": workers,
                    "forward_tiles_per_s": reference,
                    "e2e_tiles_per_s": report.tiles_per_s,
                    "ratio_e2e": report.tiles_per_s / reference,
                    "ratio_pipeline": report.tiles_embedded / report.pipeline_seconds / reference,
                }
            )
            print(
                f"  layout {precision} threads={threads} workers={workers}: "
                f"ratio {rows[-1]['ratio_e2e']:.2f}",
                flush=True,
            )
    return rows


def malloc_effect(store, key: str, args: argparse.Namespace) -> dict:
    """Forward-only fp32 / bf16 with glibc's default allocator settings, then with freed memory reused."""
    from embedstore.backbones import get_backbone
    from embedstore.embed.forward import Forward
    from embedstore.runtime import reuse_freed_memory

    backbone = get_backbone(key)
    pixels = sample_pixels(store, backbone.spec.input_size, args.batch_size)
    model = backbone.build()
    out: dict = {"backbone": key}
    for label in ("default", "reuse"):
        if label == "reuse":
            out["reuse_applied"] = reuse_freed_memory()
        for precision in args.precisions:
            forward = Forward(model, torch.device("cpu"), precision, True, False, args.batch_size)
            out[f"{label}_{precision}"] = forward_rate(forward, pixels, args.forward_tiles // 2)
    print(f"  allocator: {out}", flush=True)
    return out


def print_tables(results: dict) -> None:
    print(
        f"\nembed throughput, {results['tiles']} PCam tiles, batch {results['batch_size']}, "
        f"{'compiled' if results['compile'] else 'eager, channels_last'}, "
        f"{results['machine']['cpus']} CPUs, torch {results['machine']['torch']}"
    )
    header = (
        f"{'backbone':<30} {'prec':<5} {'forward/s':>9} {'e2e/s':>7} {'ratio':>6} "
        f"{'pipeline/s':>10} {'ratio':>6} {'setup s':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in results["throughput"]:
        mark = "" if row["ratio_e2e"] >= TARGET else "  < target"
        print(
            f"{row['backbone']:<30} {row['precision']:<5} {row['forward_tiles_per_s']:>9.1f} "
            f"{row['e2e_tiles_per_s']:>7.1f} {row['ratio_e2e']:>6.2f} {row['pipeline_tiles_per_s']:>10.1f} "
            f"{row['ratio_pipeline']:>6.2f} {row['setup_seconds']:>7.1f}{mark}"
        )
    print(
        f"\n{'safe write path (same rows)':<30} {'prec':<5} {'rows':>6} {'append s':>9} {'keyed s':>8} share"
    )
    for row in results["throughput"]:
        w = row["write_path"]
        mark = "" if row["write_overhead_share"] <= WRITE_OVERHEAD_TARGET else "  > 10 %"
        print(
            f"{row['backbone']:<30} {row['precision']:<5} {w['rows']:>6} {w['append']:>9.3f} "
            f"{w['keyed']:>8.3f} {row['write_overhead_share']:>7.2%}{mark}"
        )
    alloc = results.get("allocator")
    if alloc:
        pairs = ", ".join(
            f"{p} {alloc[f'default_{p}']:.1f} -> {alloc[f'reuse_{p}']:.1f}/s" for p in results["precisions"]
        )
        print(f"\nforward-only {alloc['backbone']}, glibc default vs freed memory reused: {pairs}")
    if results["agreement"]:
        print(f"\n{'bf16 vs fp32':<30} {'mean cos':>9} {'min cos':>8} {'top-10 overlap':>15}")
    for row in results["agreement"]:
        print(
            f"{row['backbone']:<30} {row['mean_cosine']:>9.5f} {row['min_cosine']:>8.5f} "
            f"{row['top10_overlap']:>15.3f}"
        )
    if results["layouts"]:
        print(
            f"\n{'layout (' + results['layouts'][0]['backbone'] + ')':<50} {'e2e/s':>7} {'ratio':>6} "
            f"{'pipeline ratio':>15}"
        )
        for row in results["layouts"]:
            decode = f"{row['workers']} decode worker(s)" if row["workers"] else "decode inline"
            name = f"{row['precision']}: torch threads {row['threads']}, {decode}"
            print(
                f"{name:<50} {row['e2e_tiles_per_s']:>7.1f} {row['ratio_e2e']:>6.2f} "
                f"{row['ratio_pipeline']:>15.2f}"
            )
    print(
        f"\nratio = end-to-end tiles/s / forward-only tiles/s (target >= {TARGET}); "
        f"total {results['seconds']:.0f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.smoke and not args.data.is_dir():
        return harness.missing_data(args.data, "the PCam tiles")
    if args.precisions == "auto":
        args.precisions = list(PRECISIONS) if native_bf16() or torch.cuda.is_available() else ["fp32"]
        if "bf16" not in args.precisions:
            print(f"note: {harness.cpu_model()} has no native bf16 (AVX-512 BF16 / AMX): measuring fp32 only")
    else:
        args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    import embedstore
    from embedstore.runtime import cpu_count

    started = time.perf_counter()
    keys = [k.strip() for k in args.backbones.split(",") if k.strip()]
    results = {
        "tiles": args.tiles,
        "compile": args.compile,
        "batch_size": args.batch_size,
        "target_ratio": TARGET,
        "precisions": args.precisions,
        "smoke": args.smoke,
        "machine": harness.machine(
            native_bf16=native_bf16(),
            cpus=cpu_count(),
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            load_avg_start=os.getloadavg()[0],
        ),
        "allocator": None,
        "throughput": [],
        "agreement": [],
        "layouts": [],
    }
    with harness.scratch("embed-bench-") as tmp:
        data = harness.fake_pcam(tmp, SMOKE["tiles"]) if args.smoke else args.data
        store = embedstore.init(tmp / "store")
        store.ingest([data], embedstore.IngestOptions(task="pcam", progress=False))
        print(
            f"ingested {len(store.catalog.tile_ids())} PCam tiles; embedding {args.tiles} per run", flush=True
        )
        if keys:
            results["allocator"] = malloc_effect(store, keys[0], args)
        for key in keys:
            rows, agree = run_backbone(store, key, args)
            results["throughput"] += rows
            if agree is not None:
                results["agreement"].append(agree)
        if not args.no_layouts and keys:
            results["layouts"] = run_layouts(store, keys[0], args)
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load_avg_end"] = os.getloadavg()[0]
    harness.write_json(args.out, results, indent=2)
    print_tables(results)
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
