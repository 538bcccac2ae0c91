"""Scale-out: the local engine against Ray Data in local mode on the same tiles, per-worker throughput,
whether both give the same rows, the cost of a store on S3, and a projection for a large cohort from
those measured figures.

    python benchmarks/scale.py [--tiles 3000] [--s3-tiles 1000] [--backbone KEY] [--out FILE.json]

Data: PCam patches (96x96, real H&E) from ../shared/data/pcam/train; without it, the PCam sample that
ships with embedstore (fewer tiles). Needs the ray extra (pip install "embedstore[ray]").

Per engine, a fresh store with the same tiles is embedded with the same backbone; tiles/s counts the
embedding pipeline (read, decode, forward, commit) after the model is built, and the whole call apart.
Ray runs as `embed --engine ray` does by default (on this 2-core machine 1 actor x 2 torch threads), and
with 2 actors x 1 thread. --rounds (3) rounds alternate the local engine and Ray's default, Ray started
afresh in each (its start-up is measured and reported apart); the median round's ratio is reported,
every round is kept in the JSON.

Same results: the Ray store's tile ids and vectors are compared with the local store's.

S3 cost: ingest + embed (local engine) of --s3-tiles tiles into a store on a real S3-compatible server
on localhost (moto in server mode, needs `pip install "moto[server]"`) against the same into a local
directory. The server is a Python process on the same 2 cores, so this is the cost of the object-store
protocol (requests, no rename, listing), not of a network; it is an upper bound on this machine.

Target (issue #11): Ray embed throughput >= 0.7x the local engine on this machine.

Not measured here: GPU throughput (no GPU in this session); the projection says which figures it rests on.

--smoke: 8 generated tiles (harness.fake_pcam), harness.SMOKE_BACKBONE, 1 round, no 2 x 1 actor run,
4 tiles on S3, in a temporary folder (still tens of seconds: Ray's start-up and its actors').
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import harness

import embedstore

RESULTS = harness.RESULTS
SHARED = harness.DATA / "pcam" / "train"
TARGET_RATIO = 0.7
COHORT_SLIDES, TILES_PER_SLIDE = 10_000, 20_000  # the projection: 0.5 um/px tiles


def tile_folder(tiles: int, work: Path, smoke: bool = False) -> tuple[Path, str]:
    """A folder of `tiles` PCam patches (links, never copies of the shared data), and where they came from."""
    if smoke:
        source = harness.fake_pcam(work / "generated", tiles) / "train"
        origin = f"{source} (generated: --smoke)"
    elif SHARED.is_dir():
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


def same_rows(a: embedstore.Store, b: embedstore.Store, backbone: str) -> dict:
    """Whether two stores hold the same (tile, view) rows, and the largest difference of their vectors."""
    import numpy as np

    from embedstore.storage.embedding_tables import table_name

    def rows(store: embedstore.Store) -> dict:
        table = store.catalog.read(table_name(backbone), columns=["tile_id", "view", "vector"])
        keys = zip(table.column("tile_id").to_pylist(), table.column("view").to_pylist(), strict=True)
        return dict(zip(keys, np.asarray(table.column("vector").to_pylist(), np.float32), strict=True))

    left, right = rows(a), rows(b)
    same_keys = left.keys() == right.keys()
    largest = max((float(np.abs(left[k] - right[k]).max()) for k in left), default=0.0) if same_keys else None
    return {"rows": len(left), "same_tile_ids": same_keys, "max_abs_difference": largest}


def ingest_engines(folder: Path, work: Path) -> dict:
    """Ingest the same folder with the local engine and on Ray: seconds each, and whether the tiles
    (ids, positions, pixel bytes), sources and files tables are equal."""
    stores, seconds = {}, {}
    for engine in ("local", "ray"):
        shutil.rmtree(work / f"ingest-{engine}", ignore_errors=True)
        store = embedstore.init(work / f"ingest-{engine}")
        started = time.perf_counter()
        store.ingest([folder], embedstore.IngestOptions(progress=False, engine=engine))
        seconds[engine] = round(time.perf_counter() - started, 2)
        stores[engine] = store
    equal = {}
    for table, key, columns in (
        ("tiles", "tile_id", ["tile_id", "source_id", "x", "y", "width", "height", "pixels"]),
        ("sources", "source_id", ["source_id", "uri", "status", "n_tiles", "fingerprint"]),
        ("files", "uri", ["uri", "source_id"]),
    ):
        local, ray = (stores[e].catalog.read(table, columns=columns).sort_by(key) for e in ("local", "ray"))
        equal[table] = local.equals(ray)
    rows = stores["local"].catalog.count("tiles")
    return {"tiles": rows, "seconds": seconds, "equal_tables": equal}


def s3_cost(folder: Path, work: Path, backbone: str, tiles: int) -> dict:
    """Ingest + embed into a local directory and into a store on a localhost S3 server: seconds each."""
    try:
        from tests.s3_server import new_prefix, s3_server
    except ImportError:
        return {"skipped": 'needs moto: pip install "moto[server]"'}
    subset = work / "s3-tiles"
    shutil.rmtree(subset, ignore_errors=True)
    for path in sorted(p for p in folder.rglob("*") if p.is_symlink())[:tiles]:
        (subset / path.parent.name).mkdir(parents=True, exist_ok=True)
        (subset / path.parent.name / path.name).symlink_to(path.resolve())
    timings = {}
    shutil.rmtree(work / "s3-local", ignore_errors=True)
    with s3_server():
        for where, location in (("local", work / "s3-local"), ("s3", new_prefix("scale"))):
            started = time.perf_counter()
            store = embedstore.init(location)
            store.ingest([subset], embedstore.IngestOptions(progress=False))
            ingested = time.perf_counter()
            store.embed(backbone, progress=False)
            done = time.perf_counter()
            timings[where] = {"ingest_s": round(ingested - started, 2), "embed_s": round(done - ingested, 2)}
            if where == "s3":
                timings["same_rows_as_local"] = same_rows(embedstore.open(work / "s3-local"), store, backbone)
    local, remote = timings["local"], timings["s3"]
    timings["tiles"] = tiles
    timings["ingest_ratio"] = round(remote["ingest_s"] / local["ingest_s"], 2)
    timings["embed_ratio"] = round(remote["embed_s"] / local["embed_s"], 2)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--tiles", type=int, default=3000)
    parser.add_argument("--s3-tiles", type=int, default=1000, help="tiles for the S3 cost (0: skip it)")
    parser.add_argument("--rounds", type=int, default=3, help="local / Ray rounds; the median is reported")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0.in1k")
    parser.add_argument("--work", type=Path, default=RESULTS / "scale")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    if args.smoke:
        with harness.scratch("scale-") as tmp:
            args.tiles, args.s3_tiles, args.rounds, args.work = 8, 4, 1, tmp
            args.backbone = harness.SMOKE_BACKBONE
            return run(args)
    return run(args)


def run(args) -> int:
    """Measure the engines, the S3 cost and the projection; write the JSON."""
    try:
        import ray
    except ImportError:
        print('benchmarks/scale.py needs Ray: pip install "embedstore[ray]"', file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    folder, origin = tile_folder(args.tiles, args.work, args.smoke)
    print(f"tiles from {origin}; backbone {args.backbone}")

    # Rounds alternate the local engine (Ray not running) and Ray's default, each round starting Ray
    # afresh; the ratio reported is the median round's. 2 x 1 actors and ingest run once, in the last.
    rounds: list[dict] = []
    for number in range(1, args.rounds + 1):
        round_runs = {"local": measure(folder, args.work, "local", args.backbone)}
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        round_runs["ray_start_seconds"] = round(time.perf_counter() - started, 2)
        round_runs["ray_default"] = measure(folder, args.work, "ray_default", args.backbone, engine="ray")
        round_runs["ratio"] = round(
            round_runs["ray_default"]["tiles_per_s"] / round_runs["local"]["tiles_per_s"], 3
        )
        print(
            f"round {number}: local {round_runs['local']['tiles_per_s']} tiles/s, Ray "
            f"{round_runs['ray_default']['workers']} x {round_runs['ray_default']['threads']} "
            f"{round_runs['ray_default']['tiles_per_s']} tiles/s, ratio {round_runs['ratio']}"
        )
        rounds.append(round_runs)
        if number < args.rounds:
            ray.shutdown()
    median_round = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    runs = {"local": median_round["local"], "ray_default": median_round["ray_default"]}
    ray_start = median_round["ray_start_seconds"]
    if not args.smoke:  # --smoke: one Ray layout (each costs its actors' start-up)
        layout = dict(engine="ray", workers=2, threads=1)
        runs["ray_2x1"] = measure(folder, args.work, "ray_2x1", args.backbone, **layout)
        print(f"ray_2x1: {runs['ray_2x1']['tiles_per_s']} tiles/s")
    ingest = ingest_engines(folder, args.work)
    print(f"ingest, local vs Ray: {ingest}")
    ray.shutdown()
    identical = same_rows(
        embedstore.open(args.work / "local"), embedstore.open(args.work / "ray_default"), args.backbone
    )
    print(f"same rows (local vs Ray): {identical}")
    s3 = s3_cost(folder, args.work, args.backbone, min(args.s3_tiles, args.tiles)) if args.s3_tiles else {}
    if s3:
        print(f"S3 store cost: {s3}")

    local = runs["local"]["tiles_per_s"]
    best_ray = max((k for k in runs if k.startswith("ray")), key=lambda k: runs[k]["tiles_per_s"])
    default_ray = runs["ray_default"]  # what `--engine ray` picks
    ratio = default_ray["tiles_per_s"] / local
    per_worker = default_ray["tiles_per_s"] / default_ray["workers"]
    per_core = per_worker / default_ray["threads"]
    cohort_tiles = COHORT_SLIDES * TILES_PER_SLIDE
    projection = {
        "tiles": cohort_tiles,
        "basis": f"the default Ray run on this CPU: {per_worker:.1f} tiles/s per "
        f"{default_ray['threads']}-thread actor, {per_core:.1f} tiles/s per core, linear across nodes",
        "hours_on_n_cpu_cores": {
            str(n): round(cohort_tiles / (per_core * n) / 3600, 1) for n in (64, 256, 1024, 4096)
        },
        "gpu": "not measured (no GPU lent in this session): rerun on a GPU machine and scale by its "
        "per-GPU tiles/s; the same formula holds (tiles / (tiles/s per GPU x N))",
    }
    result = {
        "machine": harness.machine(),
        "smoke": args.smoke,
        "tiles_from": origin,
        "backbone": args.backbone,
        "runs": runs,
        "ray_start_seconds": round(ray_start, 2),
        "ray_over_local": round(ratio, 3),
        "rounds": rounds,
        "best_ray": best_ray,
        "per_worker_tiles_per_s": round(per_worker, 2),
        "per_core_tiles_per_s": round(per_core, 2),
        "projection": projection,
        "same_rows_local_vs_ray": identical,
        "ingest_local_vs_ray": ingest,
        "s3_store_cost": s3,
        "targets": [
            {
                "target": f"Ray embed throughput >= {TARGET_RATIO}x the local engine",
                "value": round(ratio, 3),
                "pass": ratio >= TARGET_RATIO,
            }
        ],
        "not_measured": ["GPU throughput (no GPU lent in this session)"],
    }
    harness.write_json(args.out, result)
    print(f"\n{'run':<10} {'actors':>6} {'threads':>7} {'tiles/s':>8} {'whole call':>10}")
    for key, run in runs.items():
        print(
            f"{key:<10} {run['workers']:>6} {run['threads']:>7} {run['tiles_per_s']:>8.1f} "
            f"{run['tiles_per_s_whole_call']:>10.1f}"
        )
    print(f"Ray start-up {ray_start:.1f} s (once per driver)")
    if "s3" in s3:
        print(
            f"S3 store ({s3['tiles']} tiles, localhost server) / local directory: "
            f"ingest x{s3['ingest_ratio']}, embed x{s3['embed_ratio']}"
        )
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    shape = f"{default_ray['workers']} actor(s) x {default_ray['threads']} thread(s)"
    print(f"Ray ({shape}, the default) / local = {ratio:.2f} (target >= {TARGET_RATIO}): {verdict}")
    for n, hours in projection["hours_on_n_cpu_cores"].items():
        print(f"projection: {cohort_tiles:,} tiles on {n} such CPU cores: {hours} h")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
