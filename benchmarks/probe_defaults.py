"""What `probe` costs at its defaults and at the full setting, on a store of a few thousand tiles.

    python benchmarks/probe_defaults.py [--tiles 3000] [--repeats 3] [--out FILE.json]
    python benchmarks/probe_defaults.py --store mystore --task nuclei [--backbones a,b,c]
    python benchmarks/probe_defaults.py --smoke   # 160 tiles, 2 narrow backbones, 1 run a setting

Without --store it builds the synthetic store of `probe_speed.py` (five backbones 1280, 1280, 1280, 680
and 512 dims wide; 4 nucleus-like classes over 80 image groups) with --tiles tiles. It then times, in one
run, the probe at its defaults and with each heavier analysis added:

- defaults: `store.probe(task, backbones)` with ProbeOptions() as shipped;
- + few-shot curve: `--shots 4,16,64,256`;
- + indicators: the label-free indicators over the task's tiles;
- full: `--seeds 3 --shots 4,16,64,256 --indicators` (what `probe` ran by default before issue #20).

Each setting's time is the median of --repeats runs (the machine is shared; every run is in the JSON),
so the ratios between settings are what to read. Issue #20's target: the defaults rank a handful of
backbones on a few thousand tiles in well under a minute on 2 cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import harness

import embedstore
from embedstore.probe.options import SHOTS, ProbeOptions

RESULTS = harness.RESULTS
TARGET_SECONDS = 60.0


def settings() -> dict[str, dict]:
    """Setting name -> ProbeOptions overrides, from the defaults to the full analysis."""
    return {
        "defaults": {},
        "+ few-shot curve": {"shots": SHOTS},
        "+ indicators": {"indicators": True},
        "full (seeds 3, curve, indicators)": {"seeds": 3, "shots": SHOTS, "indicators": True},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--tiles", type=int, default=3000, help="tiles of the synthetic store")
    parser.add_argument("--store", type=Path, help="time an existing store instead (with --task)")
    parser.add_argument("--task", default=None)
    parser.add_argument("--backbones", default="all")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the median counts")
    parser.add_argument("--out", type=Path, default=RESULTS / "probe_defaults.json")
    args = parser.parse_args(argv)
    if args.store is not None and args.task is None:
        parser.error("--store needs --task")
    if args.smoke:
        args.repeats, args.store = 1, None
    with contextlib.ExitStack() as stack:
        if args.store is not None:
            return measure(args, embedstore.open(args.store), args.task)
        from probe_speed import SMOKE_TILES, SMOKE_WIDTHS, TASK, WIDTHS, build_store

        folder = stack.enter_context(harness.scratch("probe-defaults-")) if args.smoke else RESULTS
        path = folder / "probe-defaults-store"
        tiles, widths = (SMOKE_TILES, SMOKE_WIDTHS) if args.smoke else (args.tiles, WIDTHS)
        args.tiles = tiles
        print(f"building a store of {tiles} tiles x {len(widths)} backbones at {path}")
        return measure(args, build_store(path, tiles, widths=widths), TASK)


def measure(args, store: embedstore.Store, task: str) -> int:
    """Time each setting on `task`, write the JSON."""
    keys = store.probe(task, args.backbones, seeds=1, shots=None, indicators=False, bootstrap=0).backbones
    tiles = store.probe(task, keys, seeds=1, shots=None, indicators=False, bootstrap=0).tiles
    print(f"task {task!r}: {tiles} tiles, {len(keys)} backbones")

    defaults = ProbeOptions()
    results = []
    for name, overrides in settings().items():
        options = dataclasses.replace(defaults, **overrides)
        seconds, runs = harness.median_seconds(lambda o=options: store.probe(task, keys, o), args.repeats)
        results.append(
            {
                "setting": name,
                "options": {k: v for k, v in vars(options).items()},
                "seconds": round(seconds, 2),
                "runs_seconds": [round(r, 2) for r in runs],
            }
        )
        print(f"{name:<36} {seconds:7.1f} s  (runs: {', '.join(f'{r:.1f}' for r in runs)})")

    default_seconds = results[0]["seconds"]
    result = {
        "machine": harness.machine(),
        "smoke": args.smoke,
        "store": str(args.store) if args.store else f"synthetic, {args.tiles} tiles",
        "task": task,
        "tiles": tiles,
        "backbones": keys,
        "settings": results,
        "targets": [
            {
                "target": f"default probe <= {TARGET_SECONDS:g} s ('well under a minute')",
                "value": default_seconds,
                "pass": default_seconds <= TARGET_SECONDS,
            }
        ],
    }
    harness.write_json(args.out, result)
    print(f"\ndefaults {default_seconds:.1f} s, full {results[-1]['seconds']:.1f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
