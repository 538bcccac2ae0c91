"""Scale-out: the local engine against Ray Data in local mode on the same tiles, per-worker throughput, and
a projection for a large cohort from those measured figures.

    python benchmarks/scale.py [--tiles 3000] [--backbone tf_efficientnet_lite0.in1k] [--out FILE.json]

Data: PCam patches (96x96, real H&E) from ../shared/data/pcam/train; without it, the PCam sample that
ships with embedstore (fewer tiles). Needs the ray extra (pip install "embedstore[ray]").

Per engine, a fresh store with the same tiles is embedded with the same backbone; tiles/s counts the
embedding pipeline (read, decode, forward, commit) after the model is built, and the whole call apart.
Ray runs as `embed --engine ray` does: 2 actors x 1 torch thread on this 2-core machine (also 1 actor x 2
threads), Ray started once beforehand (its start-up is measured and reported separately).

Target (issue #11): Ray embed throughput >= 0.7x the local engine on this machine.

Not measured here: a store on object storage (not implemented yet), and GPU throughput (no GPU in this
session); the projection says which figures it rests on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import embedstore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data" / "pcam" / "train"
TARGET_RATIO = 0.7
COHORT_SLIDES, TILES_PER_SLIDE = 10_000, 20_000  # the projection: 0.5 um/px tiles


def tile_folder(tiles: int, work: Path) -> tuple[Path, str]:
    """A folder of `tiles` PCam patches (links, never copies of the shared data), and where they came from."""
    if SHARED.is_dir():
        source, origin = SHARED, str(SHARED)
    else:
        source = Path(embedstore.__file__).parent / "samples" / "pcam"
        origin = f"{source} (../shared/data/pcam is missing: the built-in sample)"
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))
    folder = work / "tiles"
    shutil.rmtree(folder, ignore_errors=True)
    for path in files[:tiles]:
        target = folder / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    return folder, origin


def measure(folder: Path, work: Path, name: str, backbone: str, **options) -> dict:
    store_path = work / name
    shutil.rmtree(store_path, ignore_errors=True)
    store = embedstore.init(store_path)
    store.ingest([folder], embedstore.IngestOptions(progress=False))
    started = time.perf_counter()
    report = store.embed(backbone, progress=False, **options)
    seconds = time.perf_counter() - started
    pipeline = report.pipeline_seconds or seconds
    return {
        "engine": report.engine,
        "workers": report.workers,
        "threads": report.threads,
        "tiles": report.tiles_embedded,
        "seconds": round(seconds, 2),
        "pipeline_seconds": round(pipeline, 2),
        "tiles_per_s": round(report.tiles_embedded / pipeline, 2),
        "tiles_per_s_whole_call": round(report.tiles_embedded / seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=3000)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0.in1k")
    parser.add_argument("--work", type=Path, default=RESULTS / "scale")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        print('benchmarks/scale.py needs Ray: pip install "embedstore[ray]"', file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    folder, origin = tile_folder(args.tiles, args.work)
    print(f"tiles from {origin}; backbone {args.backbone}")

    runs = {"local": measure(folder, args.work, "local", args.backbone)}
    print(f"local: {runs['local']['tiles_per_s']} tiles/s")
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    for actors, threads in ((2, 1), (1, 2)):
        key = f"ray_{actors}x{threads}"
        runs[key] = measure(
            folder, args.work, key, args.backbone, engine="ray", workers=actors, threads=threads
        )
        print(f"{key}: {runs[key]['tiles_per_s']} tiles/s")
    ray.shutdown()

    local = runs["local"]["tiles_per_s"]
    best_ray = max((k for k in runs if k.startswith("ray")), key=lambda k: runs[k]["tiles_per_s"])
    default_ray = runs["ray_2x1"]  # what `--engine ray` picks on 2 cores
    ratio = default_ray["tiles_per_s"] / local
    per_worker = default_ray["tiles_per_s"] / default_ray["workers"]
    cohort_tiles = COHORT_SLIDES * TILES_PER_SLIDE
    projection = {
        "tiles": cohort_tiles,
        "basis": f"ray_2x1 per-worker throughput on this CPU: {per_worker:.1f} tiles/s per 1-thread actor",
        "hours_on_n_cpu_workers": {
            str(n): round(cohort_tiles / (per_worker * n) / 3600, 1) for n in (16, 64, 256, 1024)
        },
        "gpu": "not measured (no GPU lent in this session): rerun on a GPU machine and scale by its "
        "per-actor tiles/s; the same formula holds (tiles / (per-worker tiles/s x N))",
    }
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "tiles_from": origin,
        "backbone": args.backbone,
        "runs": runs,
        "ray_start_seconds": round(ray_start, 2),
        "ray_over_local": round(ratio, 3),
        "best_ray": best_ray,
        "per_worker_tiles_per_s": round(per_worker, 2),
        "projection": projection,
        "targets": [
            {
                "target": f"Ray embed throughput >= {TARGET_RATIO}x the local engine",
                "value": round(ratio, 3),
                "pass": ratio >= TARGET_RATIO,
            }
        ],
        "not_measured": ["S3 store cost (object storage not implemented yet)", "GPU throughput"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'run':<10} {'actors':>6} {'threads':>7} {'tiles/s':>8} {'whole call':>10}")
    for key, run in runs.items():
        print(
            f"{key:<10} {run['workers']:>6} {run['threads']:>7} {run['tiles_per_s']:>8.1f} "
            f"{run['tiles_per_s_whole_call']:>10.1f}"
        )
    print(f"Ray start-up {ray_start:.1f} s (once per driver)")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"Ray (2 actors x 1 thread) / local = {ratio:.2f} (target >= {TARGET_RATIO}): {verdict}")
    for n, hours in projection["hours_on_n_cpu_workers"].items():
        print(f"projection: {cohort_tiles:,} tiles on {n} such CPU workers: {hours} h")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
