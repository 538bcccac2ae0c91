"""The probe's group-aware splitter against scikit-learn's StratifiedGroupKFold(shuffle=True) on a few
shapes of task: how evenly classes spread over the test folds, how even the fold sizes are, how many of 5
seeds give distinct partitions, and the time of one call.

    python benchmarks/splits.py [--out FILE.json] [--smoke]

stratification: the largest, over classes, of the standard deviation across folds of the class's share
of the fold (`splits.stratification`), mean over 5 seeds; size-cv: standard deviation of the fold sizes
over the mean fold size. Synthetic data made here; seconds to run (scikit-learn's side is the slow one).
--smoke: 2 seeds, the shapes under 2,000 tiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import harness
import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from embedstore.evaluate import folds as splits

SEEDS = 5


def shapes() -> Iterator[tuple[str, np.ndarray, np.ndarray, int]]:
    rng = np.random.default_rng(0)
    sizes = rng.integers(30, 200, 20)
    mixes = rng.dirichlet([1, 1, 1], 20)
    labels = np.concatenate([rng.choice(3, n, p=m) for n, m in zip(sizes, mixes, strict=True)])
    yield "20 images, distinct 3-class mixes", labels, np.repeat(np.arange(20), sizes), 5
    sizes = np.minimum(rng.geometric(0.02, 300), 200)
    bias = rng.integers(0, 4, 300)
    mixed = rng.random(sizes.sum()) < 0.6
    labels = np.where(mixed, np.repeat(bias, sizes), rng.integers(0, 4, sizes.sum()))
    yield "300 skewed groups, 4 classes", labels, np.repeat(np.arange(300), sizes), 5
    labels = (rng.random(5000) < 0.05).astype(int)
    yield "5000 one-tile groups, 5 % positive", labels, np.arange(5000), 5
    sizes = rng.integers(5, 60, 40)
    labels = np.concatenate([np.full(n, i % 2) for i, n in enumerate(sizes)])
    yield "40 one-class groups, 2 classes", labels, np.repeat(np.arange(40), sizes), 5
    sizes = rng.integers(50, 400, 8)
    yield "8 groups, 3 folds", rng.integers(0, 2, sizes.sum()), np.repeat(np.arange(8), sizes), 3


def ours(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    return [split.test for split in splits.group_folds(labels, groups, folds, seed)]


def theirs(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(labels, labels, groups)]


Splitter = Callable[[np.ndarray, np.ndarray, int, int], list[np.ndarray]]


def measure(labels: np.ndarray, groups: np.ndarray, folds: int, splitter: Splitter, seeds: int) -> dict:
    started = time.perf_counter()
    found = [splitter(labels, groups, folds, seed) for seed in range(seeds)]
    return {
        "ms": 1000 * (time.perf_counter() - started) / seeds,
        "stratification": float(np.mean([splits.stratification(labels, tests) for tests in found])),
        "size_cv": float(
            np.mean([np.std([len(t) for t in tests]) / (len(labels) / folds) for tests in found])
        ),
        "distinct": len({frozenset(np.sort(t).tobytes() for t in tests) for tests in found}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "splits.json")
    args = parser.parse_args(argv)
    seeds = 2 if args.smoke else SEEDS
    rows = []
    for name, labels, groups, folds in shapes():
        if args.smoke and len(labels) >= 2000:
            continue
        print(f"{name} ({len(labels)} tiles, {len(np.unique(groups))} groups, {folds} folds)")
        row = {"shape": name, "tiles": len(labels), "folds": folds, "seeds": seeds}
        for side, splitter in (("embedstore", ours), ("scikit-learn", theirs)):
            m = row[side] = measure(labels, groups, folds, splitter, seeds)
            print(
                f"  {side:<13} stratification {m['stratification']:.4f}  size-cv {m['size_cv']:.3f}  "
                f"distinct {m['distinct']}/{seeds}  {m['ms']:7.1f} ms"
            )
        rows.append(row)
    harness.write_json(args.out, {"machine": harness.machine(), "smoke": args.smoke, "shapes": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
