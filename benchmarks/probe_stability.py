"""Speed of the probe's bootstrap stability (the top pick's share of group resamples), alone.

    python benchmarks/probe_stability.py [--tiles 5000] [--backbones 5] [--resamples 200] [--out FILE.json]
    python benchmarks/probe_stability.py --smoke   # 300 tiles, 2 backbones, 20 resamples, 1 run each

Synthetic out-of-fold outputs (no probe is fitted: this times only `stability.top_shares`): --tiles tiles
in 100 groups (and, the worst case, one group per tile), 5 group folds x 1 and x 3 seeds (the seeds'
folds differ), the three ranked probes, --backbones backbones; balanced accuracy (counting) and
AUROC (ranks) on 2 and 4 classes. Each setting: the median of 3 runs. Target (issue #20): a second or
two for 5 backbones x 5k tiles x 200 resamples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import harness
import numpy as np

from embedstore.probe import stability


def synthetic(tiles: int, groups: int, classes: int, seeds: int, backbones: int, metric: str):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, classes, tiles)
    group_code = rng.integers(0, groups, tiles)
    group = group_code.astype(str)
    folds = []
    for seed in range(seeds):  # group folds: a group's tiles are in one test set
        fold_of = rng.permutation(np.arange(groups) % 5)[group_code]
        for fold in range(5):
            folds.append(
                type("Split", (), {"seed": seed, "fold": fold, "test": np.flatnonzero(fold_of == fold)})
            )
    oof = stability.OutOfFold.of(codes, group, classes, metric, folds)
    for b in range(backbones):
        for split in folds:
            logits = rng.normal(size=(len(split.test), classes)).astype(np.float32)
            logits[np.arange(len(split.test)), codes[split.test]] += 0.5 + 0.1 * b
            p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            oof.record(f"b{b}", split.seed, split.fold, {"knn": p, "prototype": p, "linear": p})
    return oof


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--tiles", type=int, default=5000)
    parser.add_argument("--backbones", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "probe_stability.json")
    args = parser.parse_args(argv)
    runs = 3
    if args.smoke:
        args.tiles, args.backbones, args.resamples, runs = 300, 2, 20, 1
    rows = []
    for metric in ("balanced_accuracy", "auroc"):
        for classes in (2, 4):
            for groups in (100, args.tiles):
                for seeds in (1, 3):
                    oof = synthetic(args.tiles, groups, classes, seeds, args.backbones, metric)
                    seconds, _ = harness.median_seconds(
                        lambda o=oof: stability.top_shares(o, args.resamples), runs
                    )
                    row = {
                        "metric": metric,
                        "classes": classes,
                        "groups": groups,
                        "seeds": seeds,
                        "probes": 3,
                        "seconds": round(seconds, 3),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    args_json = {k: str(v) for k, v in vars(args).items()}
    result = {"machine": harness.machine(), "smoke": args.smoke, "args": args_json, "rows": rows}
    harness.write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
