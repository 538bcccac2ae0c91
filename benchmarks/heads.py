"""Heads (issue #10): scarce positives, training speed against fine-tuning, and memory when streaming.

Phases (`--only`, comma-separated; default all; results merge into the JSON, so phases can run apart):
  scarce  three tasks with a scarce positive class, embedded with tf_efficientnet_lite0.in1k:
            amibr       AMi-Br atypical (22 %) vs normal mitoses, grouped by slide;
            pcam5       PCam with the training positives subsampled to 5 % (of the `train` split tiles;
                        all `valid` tiles are the test set);
            crc_others  crc_nuclei `others` (10 %) vs the three other classes, grouped by image.
          Per seed (--seeds, >= 5 for the report) the test tiles are held out before anything is
          trained: AMi-Br and crc_nuclei by an outer group-aware split (fold 0 of embedstore's 5
          StratifiedGroupKFold folds, shuffled by the seed), PCam by its `valid` split. The remaining
          tiles become a task `hb-<task>-s<seed>` in a copy of the store; every configuration trains
          on it with one shared inner group-aware split (heads.tile_batches.split_tiles: 80/20, early stopping
          and threshold on the inner validation tiles), and is scored once on the test tiles:
            plain     no class weights, threshold 0.5;
            strong    class-weighted loss, threshold tuned on validation (the strong baseline);
            +AUG      the strong baseline with one augmentation (--augments; `views` when the table
                      holds stored views: --views N embeds them into the copy first);
            tuned     heads.tune's best of --tune-n configurations (selected on the inner validation
                      tiles only).
          Positive-class F1 (at each head's threshold) and AUROC on the test tiles; mean and 95 %
          t-interval over the seeds; tuned vs strong: relative F1 gain, whether the intervals overlap,
          and the paired per-seed difference. pcam5 also reports F1 reweighted to the 5 % training
          prevalence (negatives counted 19x), since its test set is balanced.
          Target: tuned >= +10 % relative F1 over strong on at least two of the three tasks with
          non-overlapping intervals.
  speed   one epoch of head training streamed from the store (BatchStream + the estimator's _step, as
          heads.train does, over the amibr tiles; median of 3 epochs; also a whole `heads.train(epochs=1)`
          call) against one epoch of fine-tuning tf_efficientnet_lite0 end to end on the same tiles' pixels
          (decoded from the store, resized to 224 px; CPU; forward + backward + AdamW step, batch 32;
          --finetune-tiles timed after one warm-up batch; decoding timed apart), per tile, as a ratio. Target
          >= 1000x.
  memory  a synthetic Lance table of 1280-d float32 vectors (written once with embedstore's
          EmbeddingWriter under results/heads-memory-store, grown in 50k-row commits: 100k, then 300k,
          then 1M rows; the table version at each size is recorded and read back pinned), 20 %
          positives, 1000 slide groups, one task per size. In a fresh subprocess per measurement:
            stream  the pipeline heads.train runs (split, augmentation sample, BatchStream + the
                    estimator's _step for one epoch, streamed validation) at the version holding N rows:
                    peak RSS (VmHWM of the child) and training rows/s;
            memory  (100k, 300k) the same training rows read into a numpy array first, then the same
                    estimator, batch size and steps over shuffled in-memory batches: rows/s;
            train   a whole heads.train(epochs=1) call on the largest size (the newest version): RSS.
          Targets: peak RSS < 1.5 GB and flat (largest / smallest <= 1.25); streamed >= 0.5x in-memory.

Data: scarce and speed read the cached store benchmarks/results/proxy-store (read-only; tasks
crc_nuclei, pcam, amibr embedded with tf_efficientnet_lite0.in1k), made by
`python benchmarks/proxy_selection.py --phases prepare,embed` from ../shared/data. Derived tasks (and
views) go into a copy, benchmarks/results/heads-store. memory needs no data.

Writes benchmarks/results/heads.json and heads.png (--quick: heads_quick.*, a smaller memory store
heads-memory-store-quick) and prints the tables.

--smoke: every phase in a temporary folder: the cached store made by proxy_selection.py's prepare and
embed phases from harness.fake_shared_data with harness.SMOKE_BACKBONE (which also stands in for
tf_efficientnet_lite0 when fine-tuning), 1 seed, 2 epochs, one augmentation, tune 2, 8 tiles fine-tuned,
a 2,000-row memory table measured in this process instead of fresh children.

    .venv/bin/python benchmarks/heads.py [--only scarce,speed,memory] [--seeds 5] [--tune-n 16]
        [--views 2] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import say, t_interval

import embedstore
from embedstore.core.schema import LABELS, TILES
from embedstore.storage.embedding_tables import table_name

RESULTS = harness.RESULTS
SOURCE_STORE = RESULTS / "proxy-store"
HEADS_STORE = RESULTS / "heads-store"
PHASES = ("scarce", "speed", "memory")
KEY = "tf_efficientnet_lite0.in1k"
TASKS: dict[str, dict[str, Any]] = {
    "amibr": {
        "source": "amibr",
        "positive": "Atypical",
        "names": ("0-normal", "1-atypical"),
        "group": "slide",
    },
    "pcam5": {"source": "pcam", "positive": "1", "names": ("0-normal", "1-tumour"), "group": "split"},
    "crc_others": {
        "source": "crc_nuclei",
        "positive": "others",
        "names": ("0-rest", "1-others"),
        "group": "image",
    },
}
PCAM_SHARE = 0.05  # training positives after subsampling
OUTER_FOLDS = 5  # the test set: one fold of 5 (about 20 % of the tiles)
AUGMENTS = ("noise:0.1", "dropout:0.2", "mixup:0.4", "mixup:0.4:within", "smote:5", "views")
MEMORY_KEY = "synthetic.memory"
MEMORY_DIM = 1280
MEMORY_SIZES = (100_000, 300_000, 1_000_000)
MEMORY_COMPARE = 2  # in-memory comparison at the first two sizes
MEMORY_CHUNK = 50_000
MEMORY_GROUPS = 1000
FINETUNE_BATCH = 32
QUICK = {
    "seeds": 2,
    "tune_n": 3,
    "epochs": 6,
    "patience": 3,
    "views": 0,
    "threads": 1,
    "finetune_tiles": 32,
    "memory_sizes": (5_000, 15_000, 50_000),
}
SMOKE = {
    **QUICK,
    "tune_n": 2,
    "epochs": 2,
    "patience": 1,
    "seeds": 1,
    "finetune_tiles": 8,
    "memory_sizes": (2_000,),
    "augments": ["noise:0.1"],
}
SMOKE_COUNTS = ["--crc-nuclei", "60", "--pcam-train", "80", "--pcam-valid", "20", "--amibr", "40"]
TARGET_GAIN, TARGET_TASKS = 0.10, 2
TARGET_SPEEDUP = 1000.0
TARGET_RSS_GB, TARGET_FLAT = 1.5, 1.25
TARGET_THROUGHPUT = 0.5


def peak_rss_bytes() -> int:
    """This process's peak resident set: VmHWM (the high-water mark of its own address space; getrusage's
    ru_maxrss would also count the parent's RSS at fork, carried across exec), else ru_maxrss."""
    return harness.rss_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    return harness.rss_bytes("VmRSS")


# -- the data ---------------------------------------------------------------------------------------------


def source_problems(source: Path, key: str) -> list[str]:
    """What the cached store lacks for scarce/speed (empty when it is usable)."""
    if not (source / "embedstore.json").is_file():
        return [f"no store at {source}"]
    store = embedstore.open(source)
    problems = []
    if not store.catalog.has_table(table_name(key)):
        problems.append(f"no {key} embeddings in {source}")
    tasks = set(store.catalog.read(LABELS, columns=["task"]).column("task").to_pylist())
    problems += [f"no task {t!r} in {source}" for t in ("amibr", "pcam", "crc_nuclei") if t not in tasks]
    return problems


def explain_missing_data(source: Path, data: Path, problems: list[str]) -> str:
    have_data = all((data / d).exists() for d in ("crc_nuclei", "pcam", "ami_br"))
    lines = [
        f"error: the scarce and speed phases need the cached store {source} ({'; '.join(problems)}): "
        f"tasks crc_nuclei, pcam and amibr embedded with {KEY}.",
        "  make it (once; about 4 min on 2 cores: ingest, then 6000 tiles at ~30 tiles/s) with",
        f"    .venv/bin/python benchmarks/proxy_selection.py --phases prepare,embed --variants {KEY}"
        + ("" if source == SOURCE_STORE.resolve() else f" --store {source}"),
    ]
    if not have_data:
        lines.append(
            f"  which reads {data}: crc_nuclei/ (nuclei_labels.csv + images/), "
            "pcam/{train,valid}/{0,1}/ and ami_br/ (AMI-BR.csv + AMi-Br/{Atypical,Normal}/), missing here; "
            "pass --data PATH to that script"
        )
    lines.append("  (the memory phase needs no data: --only memory)")
    return "\n".join(lines)


def derive_settings(source: Path, key: str) -> dict[str, Any]:
    return {
        "source": str(source),
        "key": key,
        "tasks": {k: {**v, "names": list(v["names"])} for k, v in TASKS.items()},
        "pcam_share": PCAM_SHARE,
        "outer_folds": OUTER_FOLDS,
    }


def heads_store(source: Path, path: Path, key: str) -> embedstore.Store:
    """The copy of the cached store the benchmark writes into (derived tasks, views, heads): the tables
    it needs, copied once; rebuilt when the derivation settings change."""
    inputs = path.with_name(path.name + "-inputs")
    recorded = inputs / "settings.json"
    settings = derive_settings(source, key)
    if path.exists() and (not recorded.is_file() or json.loads(recorded.read_text()) != settings):
        say(f"{path} was derived with other settings: rebuilding it")
        shutil.rmtree(path)
    if not path.exists():
        say(f"copying the tables needed from {source} into {path}")
        staging = path.with_name(path.name + ".copying")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(source / "embedstore.json", staging / "embedstore.json")
        for table in ("tiles", "labels", "sources", "files", table_name(key)):
            if (source / f"{table}.lance").is_dir():
                shutil.copytree(source / f"{table}.lance", staging / f"{table}.lance")
        staging.rename(path)
        inputs.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(settings, indent=1))
    return embedstore.open(path)


class TaskData:
    """One scarce task's tiles: ids (sorted), 0/1 codes, groups, PCam split."""

    def __init__(self, store: embedstore.Store, task: str) -> None:
        import polars as pl

        spec = TASKS[task]
        labels = pl.from_arrow(
            store.catalog.read(LABELS, columns=["tile_id", "label"], filter=f"task = '{spec['source']}'")
        )
        tiles = pl.from_arrow(store.catalog.read(TILES, columns=["tile_id", "slide", "image", "split"]))
        frame = labels.join(tiles, on="tile_id", how="left").sort("tile_id")
        self.task = task
        self.ids = np.asarray(frame.get_column("tile_id").to_list(), dtype=object)
        self.y = (frame.get_column("label") == spec["positive"]).to_numpy().astype(np.int64)
        self.groups = np.asarray(frame.get_column(spec["group"]).to_list(), dtype=object).astype(str)
        self.split = np.asarray(frame.get_column("split").to_list(), dtype=object).astype(str)

    def seed_split(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(training positions, test positions) for a seed; the test tiles are never trained or tuned on."""
        if self.task == "pcam5":
            train, test = np.flatnonzero(self.split == "train"), np.flatnonzero(self.split == "valid")
            negatives, positives = train[self.y[train] == 0], train[self.y[train] == 1]
            keep = round(PCAM_SHARE / (1 - PCAM_SHARE) * len(negatives))
            rng = np.random.default_rng([seed, 5])
            chosen = np.sort(rng.choice(positives, size=min(keep, len(positives)), replace=False))
            return np.sort(np.concatenate([negatives, chosen])), test
        from embedstore.evaluate.folds import group_folds

        fold = group_folds(self.y, self.groups, OUTER_FOLDS, seed)[0]
        return fold.train, fold.test


def derived_task(store: embedstore.Store, data: TaskData, seed: int, tasks: set[str]) -> tuple[str, Any]:
    """The task `hb-<task>-s<seed>` (training side only; imported once) and the test positions."""
    train, test = data.seed_split(seed)
    name = f"hb-{data.task}-s{seed}"
    if name not in tasks:
        names = TASKS[data.task]["names"]
        root = Path(store.root)
        csv = root.with_name(root.name + "-inputs") / f"{name}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text(
            "tile_id,label\n" + "".join(f"{data.ids[i]},{names[data.y[i]]}\n" for i in train.tolist())
        )
        store.import_labels(name, csv)
        tasks.add(name)
    return name, (train, test)


def store_tasks(store: embedstore.Store) -> set[str]:
    return set(store.catalog.read(LABELS, columns=["task"]).column("task").to_pylist())


def has_views(store: embedstore.Store, key: str) -> bool:
    return store.catalog.dataset(table_name(key)).count_rows(filter="view > 0") > 0


def embed_views(store: embedstore.Store, key: str, views: int, threads: int) -> dict[str, Any]:
    """`views` augmented views per tile into the copy (incremental: only what is missing)."""
    started = time.perf_counter()
    report = store.embed(key, views=views, progress=False, threads=threads)
    say(report.summary().splitlines()[0])
    return {
        "views": views,
        "rows_written": report.rows_written,
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- scarce -------------------------------------------------------------------------------------------------


def test_scores(estimator, threshold: float, x: np.ndarray, y: np.ndarray, reweight: float | None):
    from sklearn.metrics import roc_auc_score

    from heads.estimators import f1_at

    p = estimator.predict_proba(x)[:, 1].astype(np.float64)
    out = {"f1": f1_at(p, y == 1, threshold), "auroc": float(roc_auc_score(y, p)), "threshold": threshold}
    if reweight is not None:  # F1 as if negatives were `reweight` times as many (prevalence-matched)
        called = p >= threshold
        tp = float((called & (y == 1)).sum())
        fp = float((called & (y == 0)).sum()) * reweight
        fn = float((~called & (y == 1)).sum())
        out["f1_at_train_prevalence"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return out


def scarce_run(
    store: embedstore.Store,
    data: TaskData,
    seed: int,
    task: str,
    positions: tuple[np.ndarray, np.ndarray],
    vectors: dict[str, np.ndarray],
    args: argparse.Namespace,
    augments: list[str],
) -> dict[str, Any]:
    from heads.card import head_dir
    from heads.tile_batches import split_tiles
    from heads.training import train
    from heads.tuning import describe, tune

    _, test = positions
    x_test = np.stack([vectors[t] for t in data.ids[test]])
    y_test = data.y[test]
    reweight = None
    if data.task == "pcam5":
        reweight = float((y_test == 1).sum() / max((y_test == 0).sum(), 1)) * (1 - PCAM_SHARE) / PCAM_SHARE
    common = {"head": args.head, "seed": seed, "overwrite": True, "epochs": args.epochs}
    if args.patience is not None:
        common["patience"] = args.patience
    split = split_tiles(store, task, args.key, None, 0.2, seed)
    configs: list[tuple[str, dict[str, Any]]] = [("plain", {"class_weight": None}), ("strong", {})]
    configs += [(f"+{a}", {"augment": a}) for a in augments]
    out: dict[str, Any] = {
        "tiles_train": len(split.train_ids),
        "tiles_validation": len(split.validation_ids),
        "tiles_test": len(test),
        "positives": {
            "train": split.class_counts()[TASKS[data.task]["names"][1]],
            "validation": split.class_counts(split.validation_ids)[TASKS[data.task]["names"][1]],
            "test": int(y_test.sum()),
        },
        "group_by": split.group_by,
        "configs": {},
    }
    for j, (label, params) in enumerate(configs):
        name = f"{task}-c{j}"
        started = time.perf_counter()
        result = train(store, args.key, task, name=name, split=split, **common, **params)
        seconds = time.perf_counter() - started
        threshold = 0.5 if label == "plain" else result.threshold
        scores = test_scores(result.estimator, threshold, x_test, y_test, reweight)
        out["configs"][label] = {
            **scores,
            "validation_f1": result.validation.get("f1_at_threshold"),
            "validation_auroc": result.validation.get("auroc"),
            "epochs": len(result.history),
            "seconds": round(seconds, 2),
            "notes": result.notes,
        }
        shutil.rmtree(head_dir(store, name), ignore_errors=True)
    started = time.perf_counter()
    extra = {"patience": args.patience} if args.patience is not None else {}
    tuned = tune(
        store,
        args.key,
        task,
        args.tune_n,
        head=args.head,
        name=f"{task}-tuned",
        seed=seed,
        overwrite=True,
        epochs=args.epochs,
        **extra,
    )
    seconds = time.perf_counter() - started
    best = tuned.trials[tuned.best_trial]
    scores = test_scores(tuned.best.estimator, tuned.best.threshold, x_test, y_test, reweight)
    config = {
        k: best[k]
        for k in ("lr", "weight_decay", "hidden", "dropout", "class_handling", "augment")
        if k in best
    }
    out["configs"]["tuned"] = {
        **scores,
        "validation_f1": best["score"],
        "validation_auroc": best.get("auroc"),
        "best_trial": tuned.best_trial,
        "config": config,
        "described": describe(config),
        "baseline_validation_f1": tuned.trials[0]["score"],
        "same_split": tuned.split.validation_ids == split.validation_ids,
        "seconds": round(seconds, 2),
    }
    out["tuning_trials"] = tuned.to_dict()["trials"]
    return out


def scarce_phase(args: argparse.Namespace, result: dict[str, Any], save) -> None:
    problems = source_problems(args.source, args.key)
    if problems:
        print(explain_missing_data(args.source, args.data, problems), file=sys.stderr)
        raise SystemExit(2)
    store = heads_store(args.source, args.heads_store, args.key)
    section = result.setdefault("scarce", {})
    if args.views and not has_views(store, args.key):
        say(f"embedding {args.views} augmented views per tile into {store.root} (the `views` augmentation)")
        section["views_embedding"] = embed_views(store, args.key, args.views, args.threads)
    views = has_views(store, args.key)
    augments = [a for a in args.augments if a != "views" or views]
    settings = {
        "head": args.head,
        "epochs": args.epochs,
        "patience": args.patience,
        "tune_n": args.tune_n,
        "augments": augments,
        "views_in_table": views,
        "derive": derive_settings(args.source, args.key),
    }
    if section.get("settings") != settings:
        section.clear()
        section["settings"] = settings
    section["skipped"] = (
        []
        if views or "views" not in args.augments
        else ["views: the table holds no stored views (run with --views 2 to embed them into the copy)"]
    )
    runs = section.setdefault("runs", {})
    from embedstore.embeddings import EmbeddingQuery

    x, ids, _ = EmbeddingQuery.of(store, args.key).views(0).columns().to_numpy()
    vectors = dict(zip(ids.tolist(), x, strict=True))
    tasks = store_tasks(store)
    for task in TASKS:
        data = TaskData(store, task)
        for seed in range(args.seeds):
            key = f"{task}/{seed}"
            if key in runs:
                continue
            name, positions = derived_task(store, data, seed, tasks)
            started = time.perf_counter()
            runs[key] = scarce_run(store, data, seed, name, positions, vectors, args, augments)
            configs = runs[key]["configs"]
            say(
                f"scarce {task} seed {seed}: test F1 plain {configs['plain']['f1']:.3f}, strong "
                f"{configs['strong']['f1']:.3f}, tuned {configs['tuned']['f1']:.3f} "
                f"({configs['tuned']['described']}) ({time.perf_counter() - started:.0f} s)"
            )
            save()
    section["summary"] = scarce_summary(runs, args.seeds)
    save()


def scarce_summary(runs: dict[str, Any], seeds: int) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for task in TASKS:
        done = [runs[f"{task}/{s}"] for s in range(seeds) if f"{task}/{s}" in runs]
        if not done:
            continue
        configs = list(done[0]["configs"])
        table = {}
        for config in configs:
            record = {}
            for metric in ("f1", "auroc", "f1_at_train_prevalence", "validation_f1"):
                values = [r["configs"][config].get(metric) for r in done]
                if all(v is not None for v in values):
                    record[metric] = t_interval(values)
            record["seconds"] = float(np.mean([r["configs"][config]["seconds"] for r in done]))
            table[config] = record
        strong, tuned = table["strong"]["f1"], table["tuned"]["f1"]
        gain = (tuned["mean"] - strong["mean"]) / strong["mean"] if strong["mean"] > 0 else math.nan
        overlap = tuned["ci_low"] <= strong["ci_high"] and strong["ci_low"] <= tuned["ci_high"]
        paired = t_interval([r["configs"]["tuned"]["f1"] - r["configs"]["strong"]["f1"] for r in done])
        summary[task] = {
            "seeds": len(done),
            "tiles": {k: done[0][k] for k in ("tiles_train", "tiles_validation", "tiles_test", "positives")},
            "group_by": done[0]["group_by"],
            "configs": table,
            "tuned_vs_strong": {
                "relative_f1_gain": gain,
                "intervals_overlap": overlap,
                "paired_difference": paired,
                "meets_target": bool(gain >= TARGET_GAIN and not overlap),
            },
            "tuned_choices": [r["configs"]["tuned"]["described"] for r in done],
        }
    return summary


# -- speed --------------------------------------------------------------------------------------------------


def speed_phase(args: argparse.Namespace, result: dict[str, Any], save) -> None:
    import torch

    from embedstore.backbones import get_backbone
    from embedstore.embed.input import fill_batch
    from embedstore.embeddings import EmbeddingQuery
    from embedstore.sources.tile_pixels import TILE_COLUMNS, TilePixels
    from heads.card import head_class, head_dir
    from heads.tile_batches import BatchStream, augmentation_sample
    from heads.training import train

    problems = source_problems(args.source, args.key)
    if problems:
        print(explain_missing_data(args.source, args.data, problems), file=sys.stderr)
        raise SystemExit(2)
    store = heads_store(args.source, args.heads_store, args.key)
    data = TaskData(store, "amibr")
    codes = {t: int(c) for t, c in zip(data.ids.tolist(), data.y.tolist(), strict=True)}
    query = EmbeddingQuery.of(store, args.key).columns()
    sample = augmentation_sample(query, codes, 2, seed=0)
    head = head_class(args.head)(seed=0)
    counts = {"0": int((data.y == 0).sum()), "1": int((data.y == 1).sum())}
    head._begin(["0", "1"], sample[0].shape[1], counts, augmentation_sample=sample)
    stream = BatchStream(query, codes, head.batch_size, seed=0)
    epochs = []
    for epoch in range(1, 4):
        started = time.perf_counter()
        rows = 0
        for x, y, _ in stream.epoch(epoch):
            head._step(x, y)
            rows += len(x)
        epochs.append(time.perf_counter() - started)
    head_per_tile = float(np.median(epochs)) / rows
    say(
        f"speed: head epoch over {rows} tiles streamed: {np.median(epochs) * 1e3:.0f} ms "
        f"({head_per_tile * 1e6:.1f} us/tile)"
    )
    started = time.perf_counter()
    whole = train(store, args.key, "amibr", name="hb-speed", head=args.head, epochs=1, overwrite=True, seed=0)
    train_wall = time.perf_counter() - started
    shutil.rmtree(head_dir(store, "hb-speed"), ignore_errors=True)

    backbone = get_backbone(args.key)
    size = backbone.spec.input_size
    wanted = data.ids[: FINETUNE_BATCH + args.finetune_tiles].tolist()
    rows_by_id = {
        r["tile_id"]: r
        for r in store.catalog.read(
            TILES, columns=TILE_COLUMNS, filter="tile_id IN ({})".format(", ".join(f"'{t}'" for t in wanted))
        ).to_pylist()
    }
    started = time.perf_counter()
    pixels = TilePixels()
    images = [pixels.rgb(rows_by_id[t]) for t in wanted]
    batch = torch.empty((len(images), size, size, 3), dtype=torch.uint8)
    fill_batch(batch, images, size, "bicubic")
    decode_per_tile = (time.perf_counter() - started) / len(images)
    tiles = batch.permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(data.y[: len(images)])
    model = backbone.build().train()
    classifier = torch.nn.Linear(backbone.spec.dim, 2)
    optimiser = torch.optim.AdamW([*model.parameters(), *classifier.parameters()], lr=1e-4)
    steps = []
    for start in range(0, len(images), FINETUNE_BATCH):
        began = time.perf_counter()
        logits = classifier(model(tiles[start : start + FINETUNE_BATCH]))
        loss = torch.nn.functional.cross_entropy(logits, labels[start : start + FINETUNE_BATCH])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        steps.append((time.perf_counter() - began, len(logits)))
    timed = steps[1:]  # the first batch warms up
    finetune_per_tile = sum(s for s, _ in timed) / sum(n for _, n in timed)
    ratio = finetune_per_tile / head_per_tile
    result["speed"] = {
        "tiles": "amibr task tiles of the heads-store (128 px PNG, resized to the backbone's input)",
        "threads": torch.get_num_threads(),
        "head": {
            "kind": args.head,
            "params": {k: v for k, v in head.get_params().items() if k in ("hidden", "batch_size", "lr")},
            "epoch_tiles": rows,
            "epoch_seconds": [round(e, 4) for e in epochs],
            "seconds_per_tile": head_per_tile,
            "train_call_seconds": round(train_wall, 3),
            "train_call_tiles": whole.card.tiles_train,
            "train_call_seconds_per_tile": train_wall / whole.card.tiles_train,
        },
        "finetune": {
            "backbone": args.key,
            "input_size": size,
            "batch_size": FINETUNE_BATCH,
            "timed_tiles": sum(n for _, n in timed),
            "warmup_tiles": steps[0][1],
            "seconds_per_tile": finetune_per_tile,
            "decode_resize_seconds_per_tile": decode_per_tile,
        },
        "ratio": ratio,
        "ratio_with_decoding": (finetune_per_tile + decode_per_tile) / head_per_tile,
        "ratio_vs_whole_train_call": finetune_per_tile / (train_wall / whole.card.tiles_train),
    }
    say(
        f"speed: fine-tuning {finetune_per_tile * 1e3:.0f} ms/tile vs head "
        f"{head_per_tile * 1e6:.1f} us/tile: {ratio:,.0f}x"
    )
    save()


# -- memory -------------------------------------------------------------------------------------------------


def memory_inputs(path: Path) -> Path:
    return path.with_name(path.name + "-inputs")


def memory_rows(start: int, count: int, chunk: int, vectors: bool = True):
    """Tile ids, 0/1 labels (20 % positive) and (optionally) vectors of rows [start, start + count): each
    `chunk`-row block has its own generators (labels apart from vectors), so any range reads the same."""
    ids = [f"m{i:07d}" for i in range(start, start + count)]
    labels, parts = [], []
    for block in range(start // chunk, (start + count - 1) // chunk + 1):
        low, high = max(start, block * chunk), min(start + count, (block + 1) * chunk)
        drawn = (np.random.default_rng([block, 0]).random(chunk) < 0.2).astype(np.int64)
        labels.append(drawn[low - block * chunk : high - block * chunk])
        if vectors:
            x = np.random.default_rng([block, 1]).standard_normal((chunk, MEMORY_DIM), dtype=np.float32)
            x[:, :32] += 0.5 * drawn[:, None].astype(np.float32)
            parts.append(x[low - block * chunk : high - block * chunk])
    return ids, np.concatenate(labels), (np.concatenate(parts) if vectors else None)


def grow_memory_store(path: Path, sizes: tuple[int, ...], chunk: int) -> dict[str, Any]:
    """The synthetic table, grown to each size in turn (only what is missing); {size: version}."""
    import pyarrow as pa

    from embedstore.core.schema import TILES_SCHEMA
    from embedstore.embed.writer import EmbeddingWriter
    from embedstore.storage.embedding_tables import Provenance

    inputs = memory_inputs(path)
    inputs.mkdir(parents=True, exist_ok=True)
    record_path = inputs / "versions.json"
    record = (
        json.loads(record_path.read_text()) if record_path.is_file() else {"versions": {}, "chunk": chunk}
    )
    if record.get("chunk") != chunk or (path.exists() and not record_path.is_file()):
        shutil.rmtree(path, ignore_errors=True)
        record = {"versions": {}, "chunk": chunk}
    store = embedstore.open(path) if path.exists() else embedstore.init(path)
    name = table_name(MEMORY_KEY)
    writer = EmbeddingWriter(store.catalog, name, Provenance.given(MEMORY_KEY, MEMORY_DIM))
    rows = store.catalog.count(name) if store.catalog.has_table(name) else 0
    written = {"rows_written": 0, "seconds": 0.0}
    for size in sizes:
        if str(size) in record["versions"]:
            continue
        if rows > size:
            raise SystemExit(
                f"error: {path} holds {rows} rows, more than {size}, with no version recorded for {size}; "
                f"delete {path} and {inputs} and run again"
            )
        started = time.perf_counter()
        while rows < size:
            count = min(chunk - rows % chunk, size - rows)
            ids, _, vectors = memory_rows(rows, count, chunk)
            tiles = {field.name: pa.nulls(count, field.type) for field in TILES_SCHEMA}
            tiles.update(
                tile_id=pa.array(ids, pa.string()),
                source_id=pa.array([f"src{i % MEMORY_GROUPS}" for i in range(rows, rows + count)]),
                x=pa.array(np.zeros(count, np.int64)),
                y=pa.array(np.zeros(count, np.int64)),
                level=pa.array(np.zeros(count, np.int32)),
                size0=pa.array(np.full(count, 224, np.int64)),
                width=pa.array(np.full(count, 224, np.int32)),
                height=pa.array(np.full(count, 224, np.int32)),
                slide=pa.array([f"slide{i % MEMORY_GROUPS}" for i in range(rows, rows + count)]),
            )
            store.catalog.insert_missing(TILES, pa.table(tiles, schema=TILES_SCHEMA))
            writer.write(ids, np.zeros(count, np.int16), vectors)
            rows += count
            written["rows_written"] += count
            say(f"memory store: {rows} rows")
        csv = inputs / f"mem-{size}.csv"
        with csv.open("w") as handle:
            handle.write("tile_id,label\n")
            for start in range(0, size, chunk):
                ids, labels, _ = memory_rows(start, min(chunk, size - start), chunk, vectors=False)
                handle.writelines(
                    f"{t},{'1-pos' if c else '0-neg'}\n" for t, c in zip(ids, labels, strict=True)
                )
        store.import_labels(f"mem-{size}", csv)
        csv.unlink()
        record["versions"][str(size)] = int(store.catalog.dataset(name).version)
        record_path.write_text(json.dumps(record, indent=1))
        written["seconds"] += time.perf_counter() - started
    record["written_this_run"] = written
    return record


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process; see the module doc."""
    import torch

    torch.set_num_threads(spec["threads"])
    from embedstore.embeddings import EmbeddingQuery
    from heads.card import head_class
    from heads.tile_batches import READ_BATCH, BatchStream, augmentation_sample, split_tiles

    rss_start = current_rss_bytes()
    store = embedstore.open(spec["store"])
    size, mode = spec["rows"], spec["mode"]
    task = f"mem-{size}"
    out: dict[str, Any] = {"rows": size, "mode": mode, "rss_after_imports": rss_start}
    if mode == "train":
        from heads.training import train

        started = time.perf_counter()
        result = train(
            store, MEMORY_KEY, task, name=task, head=spec["head"], epochs=1, overwrite=True, seed=0
        )
        out.update(
            seconds=time.perf_counter() - started,
            epoch_seconds=result.history[0]["seconds"],
            tiles_train=result.card.tiles_train,
            peak_rows=result.counters.peak_rows,
            arrow_batches=result.counters.arrow_batches,
            validation_auroc=result.validation.get("auroc"),
            peak_rss=peak_rss_bytes(),
        )
        return out
    started = time.perf_counter()
    split = split_tiles(store, task, None, None, 0.2, 0)
    out["split_seconds"], out["rss_after_split"] = time.perf_counter() - started, current_rss_bytes()
    query = EmbeddingQuery.of(store, MEMORY_KEY).at(spec["version"]).columns()
    train_codes = split.train_codes()
    sample = augmentation_sample(query, train_codes, len(split.classes), seed=0)
    out["sample_rows"], out["peak_rss_after_sample"] = len(sample[0]), peak_rss_bytes()
    head = head_class(spec["head"])(seed=0, epochs=1)
    head._begin(split.classes, MEMORY_DIM, split.class_counts(), augmentation_sample=sample)
    del sample
    out["setup_seconds"] = time.perf_counter() - started
    out["rss_after_setup"] = current_rss_bytes()
    if mode == "stream":
        stream = BatchStream(query, train_codes, head.batch_size, seed=0)
        started, rows = time.perf_counter(), 0
        for x, y, _ in stream.epoch(1):
            head._step(x, y)
            rows += len(x)
        out["epoch_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        checking = BatchStream(query, split.validation_codes(), READ_BATCH, shuffle=False)
        probabilities, codes = [], []
        for x, y, _ in checking.epoch(0):
            probabilities.append(head.predict_proba(x))
            codes.append(y)
        scores = head.validation_scores(np.concatenate(probabilities), np.concatenate(codes))
        out.update(
            validation_seconds=time.perf_counter() - started,
            validation_auroc=scores["auroc"],
            peak_rows=stream.counters.peak_rows,
            arrow_batches=stream.counters.arrow_batches,
        )
    else:
        reader = BatchStream(query, train_codes, READ_BATCH, shuffle=False)
        started = time.perf_counter()
        x_all = np.empty((len(train_codes), MEMORY_DIM), np.float32)
        y_all = np.empty(len(train_codes), np.int64)
        filled = 0
        for x, y, _ in reader.epoch(0):
            x_all[filled : filled + len(x)], y_all[filled : filled + len(x)] = x, y
            filled += len(x)
        x_all, y_all = x_all[:filled], y_all[:filled]
        out["load_seconds"] = time.perf_counter() - started
        order = np.random.default_rng([0, 1]).permutation(filled)
        started, rows = time.perf_counter(), 0
        for start in range(0, filled, head.batch_size):
            index = order[start : start + head.batch_size]
            head._step(x_all[index], y_all[index])
            rows += len(index)
        out["epoch_seconds"] = time.perf_counter() - started
    out.update(epoch_rows=rows, rows_per_second=rows / out["epoch_seconds"], peak_rss=peak_rss_bytes())
    return out


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=harness.ROOT,
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {**spec, "error": " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_phase(args: argparse.Namespace, result: dict[str, Any], save) -> None:
    sizes = tuple(args.memory_sizes)
    path = args.memory_store
    say(f"memory: synthetic table of {', '.join(f'{s:,}' for s in sizes)} rows x {MEMORY_DIM}-d in {path}")
    record = grow_memory_store(path, sizes, min(MEMORY_CHUNK, sizes[0]))
    store = embedstore.open(path)
    newest = store.catalog.count(table_name(MEMORY_KEY))
    section: dict[str, Any] = {
        "store": str(path),
        "dim": MEMORY_DIM,
        "sizes": list(sizes),
        "versions": record["versions"],
        "written_this_run": record.get("written_this_run"),
        "head": args.head,
        "threads": args.threads,
        "labels_rows_in_store": store.catalog.count(LABELS),
        "measurements": [],
    }
    plan = [("stream", s) for s in sizes] + [("memory", s) for s in sizes[:MEMORY_COMPARE]]
    if newest == sizes[-1]:
        plan.append(("train", sizes[-1]))
    for mode, size in plan:
        spec = {
            "store": str(path),
            "rows": size,
            "mode": mode,
            "version": record["versions"][str(size)],
            "head": args.head,
            "threads": args.threads,
        }
        started = time.perf_counter()
        # --smoke measures in this process (the code path; its RSS says nothing): a child costs seconds
        measured = memory_child(spec) if args.smoke else run_child(spec)
        measured["wall_seconds"] = round(time.perf_counter() - started, 1)
        section["measurements"].append(measured)
        if "error" in measured:
            say(f"memory {mode} {size:,}: failed: {measured['error']}")
        else:
            rate = f", {measured['rows_per_second']:,.0f} rows/s" if "rows_per_second" in measured else ""
            say(f"memory {mode} {size:,}: peak RSS {measured['peak_rss'] / 1e9:.2f} GB{rate}")
    by = {(m["mode"], m["rows"]): m for m in section["measurements"] if "error" not in m}
    streamed = [by[("stream", s)]["peak_rss"] for s in sizes if ("stream", s) in by]
    section["peak_rss_gb"] = {
        str(s): by[("stream", s)]["peak_rss"] / 1e9 for s in sizes if ("stream", s) in by
    }
    section["rss_growth"] = streamed[-1] / streamed[0] if len(streamed) >= 2 else None
    section["throughput_ratio"] = {
        str(s): by[("stream", s)]["rows_per_second"] / by[("memory", s)]["rows_per_second"]
        for s in sizes[:MEMORY_COMPARE]
        if ("stream", s) in by and ("memory", s) in by
    }
    if ("train", sizes[-1]) in by:
        section["train_call_peak_rss_gb"] = by[("train", sizes[-1])]["peak_rss"] / 1e9
    result["memory"] = section
    save()


# -- report -------------------------------------------------------------------------------------------------


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    summary = result.get("scarce", {}).get("summary", {})
    if summary:
        met = [t for t, s in summary.items() if s["tuned_vs_strong"]["meets_target"]]
        gains = {t: round(s["tuned_vs_strong"]["relative_f1_gain"], 4) for t, s in summary.items()}
        seeds = min(s["seeds"] for s in summary.values())
        out.append(
            {
                "target": f"tuned >= +{TARGET_GAIN:.0%} F1 over strong, CIs apart, "
                f"on >= {TARGET_TASKS} of 3 tasks",
                "value": f"{len(met)} ({', '.join(met) or 'none'}); gains {gains}; {seeds} seeds",
                "pass": len(met) >= TARGET_TASKS,
            }
        )
    speed = result.get("speed")
    if speed:
        out.append(
            {
                "target": f"head epoch >= {TARGET_SPEEDUP:g}x faster per tile than fine-tuning",
                "value": f"{speed['ratio']:,.0f}x",
                "pass": speed["ratio"] >= TARGET_SPEEDUP,
            }
        )
    memory = result.get("memory")
    if memory and memory.get("peak_rss_gb"):
        peak = max(memory["peak_rss_gb"].values())
        if memory.get("train_call_peak_rss_gb") is not None:
            peak = max(peak, memory["train_call_peak_rss_gb"])
        out.append(
            {
                "target": f"peak RSS < {TARGET_RSS_GB} GB streaming up to {max(memory['sizes']):,} rows",
                "value": f"{peak:.2f} GB",
                "pass": peak < TARGET_RSS_GB,
            }
        )
        growth = memory.get("rss_growth")
        if growth is not None:
            out.append(
                {
                    "target": f"RSS flat: largest / smallest size <= {TARGET_FLAT}",
                    "value": f"{growth:.2f}",
                    "pass": growth <= TARGET_FLAT,
                }
            )
        ratios = memory.get("throughput_ratio") or {}
        if ratios:
            out.append(
                {
                    "target": f"streamed rows/s >= {TARGET_THROUGHPUT}x in-memory",
                    "value": ", ".join(f"{int(k):,}: {v:.2f}x" for k, v in ratios.items()),
                    "pass": min(ratios.values()) >= TARGET_THROUGHPUT,
                }
            )
    return out


def ci(record: dict[str, Any] | None) -> str:
    if not record:
        return "-"
    return f"{record['mean']:.3f} [{record['ci_low']:.3f}, {record['ci_high']:.3f}]"


def print_summary(result: dict[str, Any]) -> None:
    summary = result.get("scarce", {}).get("summary", {})
    for task, s in summary.items():
        tiles = s["tiles"]
        print(
            f"\n== scarce: {task} ({s['seeds']} seeds; {tiles['tiles_train']} train / "
            f"{tiles['tiles_validation']} validation / {tiles['tiles_test']} test tiles, "
            f"positives {tiles['positives']}, by {s['group_by']}) =="
        )
        extra = "f1_at_train_prevalence" in s["configs"]["strong"]
        header = f"{'config':<20}{'test F1 (95% CI)':<26}{'test AUROC (95% CI)':<26}{'val F1':>7}"
        print(header + (f"  {'F1 @5% prevalence':<26}" if extra else "") + f"{'s/run':>7}")
        for config, r in s["configs"].items():
            line = f"{config:<20}{ci(r['f1']):<26}{ci(r['auroc']):<26}{r['validation_f1']['mean']:>7.3f}"
            if extra:
                line += f"  {ci(r.get('f1_at_train_prevalence')):<26}"
            print(line + f"{r['seconds']:>7.1f}")
        v = s["tuned_vs_strong"]
        print(
            f"tuned vs strong: {v['relative_f1_gain']:+.1%} relative F1; intervals "
            f"{'overlap' if v['intervals_overlap'] else 'apart'}; "
            f"paired difference {ci(v['paired_difference'])}"
        )
        print("tuned picks: " + " | ".join(s["tuned_choices"]))
    for note in result.get("scarce", {}).get("skipped", []):
        print(f"skipped: {note}")
    speed = result.get("speed")
    if speed:
        h, f = speed["head"], speed["finetune"]
        print(f"\n== speed (CPU, {speed['threads']} threads) ==")
        print(
            f"head ({h['kind']}) epoch streamed: {h['seconds_per_tile'] * 1e6:.1f} us/tile "
            f"over {h['epoch_tiles']} tiles "
            f"(a whole train(epochs=1) call: {h['train_call_seconds_per_tile'] * 1e6:.0f} us/training tile)"
        )
        print(
            f"fine-tuning {f['backbone']} at {f['input_size']} px, batch {f['batch_size']}: "
            f"{f['seconds_per_tile'] * 1e3:.1f} ms/tile over {f['timed_tiles']} tiles "
            f"(+ {f['decode_resize_seconds_per_tile'] * 1e3:.1f} ms/tile decoding)"
        )
        print(
            f"ratio {speed['ratio']:,.0f}x (with decoding {speed['ratio_with_decoding']:,.0f}x; "
            f"against the whole train call {speed['ratio_vs_whole_train_call']:,.0f}x)"
        )
    memory = result.get("memory")
    if memory:
        print(f"\n== memory ({memory['head']} head, {memory['threads']} threads, {memory['dim']}-d) ==")
        print(f"{'mode':<8}{'rows':>11}{'peak RSS GB':>13}{'rows/s':>11}{'epoch s':>9}{'peak rows':>11}")
        for m in memory["measurements"]:
            if "error" in m:
                print(f"{m['mode']:<8}{m['rows']:>11,}  failed: {m['error']}")
                continue
            rate = f"{m['rows_per_second']:>11,.0f}" if "rows_per_second" in m else f"{'-':>11}"
            print(
                f"{m['mode']:<8}{m['rows']:>11,}{m['peak_rss'] / 1e9:>13.2f}{rate}{m['epoch_seconds']:>9.1f}"
                f"{m.get('peak_rows', '-'):>11}"
            )
    rows = targets(result)
    if rows:
        print(f"\n{'target':<68} {'value':<40} pass")
        for row in rows:
            print(f"{row['target']:<68} {row['value']:<40} {row['pass']}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result.get("scarce", {}).get("summary", {})
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    for ax, task in zip(axes[0], TASKS, strict=True):
        s = summary.get(task)
        if not s:
            ax.set_axis_off()
            ax.set_title(f"{task}: not run")
            continue
        names = list(s["configs"])[::-1]
        means = [s["configs"][c]["f1"]["mean"] for c in names]
        err = [
            [s["configs"][c]["f1"]["mean"] - s["configs"][c]["f1"]["ci_low"] for c in names],
            [s["configs"][c]["f1"]["ci_high"] - s["configs"][c]["f1"]["mean"] for c in names],
        ]
        colours = [
            "tab:green" if c == "tuned" else "tab:blue" if c == "strong" else "tab:grey" for c in names
        ]
        ax.barh(np.arange(len(names)), means, xerr=err, color=colours, capsize=3)
        ax.set_yticks(np.arange(len(names)), names, fontsize=8)
        ax.set_xlim(0, 1)
        v = s["tuned_vs_strong"]
        ax.set_title(
            f"{task}: test F1 of the positive class, {s['seeds']} seeds\n"
            f"tuned vs strong {v['relative_f1_gain']:+.1%} "
            f"({'CIs overlap' if v['intervals_overlap'] else 'CIs apart'})",
            fontsize=9,
        )
        ax.set_xlabel("F1 (mean, 95 % t-interval)")
        ax.grid(True, axis="x", alpha=0.3)
    ax = axes[1][0]
    speed = result.get("speed")
    if speed:
        values = [speed["head"]["seconds_per_tile"], speed["finetune"]["seconds_per_tile"]]
        ax.bar(
            ["head epoch\n(streamed)", "fine-tune epoch\n(lite0, CPU)"],
            values,
            color=["tab:green", "tab:red"],
        )
        ax.set_yscale("log")
        ax.set_ylabel("seconds per tile (log)")
        ax.set_title(f"training speed: {speed['ratio']:,.0f}x (target {TARGET_SPEEDUP:g}x)", fontsize=9)
    else:
        ax.set_axis_off()
    memory = result.get("memory")
    ax, bx = axes[1][1], axes[1][2]
    if memory and memory.get("measurements"):
        ok = [m for m in memory["measurements"] if "error" not in m]
        for mode, colour in (("stream", "tab:green"), ("memory", "tab:orange"), ("train", "tab:blue")):
            points = [(m["rows"], m["peak_rss"] / 1e9) for m in ok if m["mode"] == mode]
            if points:
                ax.plot(*zip(*points, strict=True), "o-", color=colour, label=mode)
        ax.axhline(TARGET_RSS_GB, color="red", linestyle=":", label=f"target {TARGET_RSS_GB} GB")
        ax.set_xscale("log")
        ax.set_xlabel("rows in the table")
        ax.set_ylabel("peak RSS (GB)")
        ax.set_ylim(bottom=0)
        ax.set_title("memory: one epoch streamed vs rows", fontsize=9)
        ax.legend(fontsize=8)
        for mode, colour in (("stream", "tab:green"), ("memory", "tab:orange")):
            points = [
                (m["rows"], m["rows_per_second"]) for m in ok if m["mode"] == mode and "rows_per_second" in m
            ]
            if points:
                bx.plot(*zip(*points, strict=True), "o-", color=colour, label=mode)
        bx.set_xscale("log")
        bx.set_xlabel("rows in the table")
        bx.set_ylabel("training rows / s")
        bx.set_title("throughput: streamed vs in memory (same estimator, batch)", fontsize=9)
        bx.legend(fontsize=8)
    else:
        ax.set_axis_off()
        bx.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--only", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    parser.add_argument("--data", type=Path, default=harness.DATA, help="the shared data")
    parser.add_argument("--source", type=Path, default=SOURCE_STORE, help="the cached store (read-only)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds (outer splits, subsamples, training)")
    parser.add_argument("--tune-n", type=int, default=16, help="configurations heads.tune tries")
    parser.add_argument("--head", default="mlp", choices=("mlp", "linear"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience [estimator's]")
    parser.add_argument("--augments", default=",".join(AUGMENTS), help="augmentations tried alone")
    parser.add_argument("--views", type=int, default=2, help="views to embed into the copy (0: none)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [torch's default]")
    parser.add_argument("--finetune-tiles", type=int, default=256, help="tiles timed when fine-tuning")
    parser.add_argument("--memory-sizes", default=",".join(map(str, MEMORY_SIZES)))
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, tune 3, tiny memory sizes")
    parser.add_argument("--out", type=Path, default=None, help="JSON path [results/heads.json]")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(memory_child(json.loads(args.child))))
        return 0
    args.key, args.heads_store = KEY, HEADS_STORE
    args.memory_store = RESULTS / ("heads-memory-store-quick" if args.quick else "heads-memory-store")
    if args.smoke:
        import torch

        threads = torch.get_num_threads()  # --smoke may run inside another program (the tests): restored
        with harness.scratch("heads-") as tmp, contextlib.ExitStack() as stack:
            stack.callback(torch.set_num_threads, threads)
            smoke_source(tmp)
            args.key, args.source, args.heads_store = (
                harness.SMOKE_BACKBONE,
                tmp / "source",
                tmp / "heads-store",
            )
            args.memory_store, args.only, args.views = tmp / "memory-store", ",".join(PHASES), 0
            vars(args).update(SMOKE)
            return run(args, parser)
    return run(args, parser)


def smoke_source(tmp: Path) -> None:
    """The cached store for --smoke at tmp/source, made as for a real run: proxy_selection.py's prepare
    and embed phases, here on harness.fake_shared_data with harness.SMOKE_BACKBONE."""
    import proxy_selection

    data = harness.fake_shared_data(tmp, per_class=40)
    argv = ["--phases", "prepare,embed", "--data", str(data), "--store", str(tmp / "source"), *SMOKE_COUNTS]
    argv += ["--variants", harness.SMOKE_BACKBONE, "--no-wait", "--out", str(tmp / "proxy_selection.json")]
    if proxy_selection.main(argv) != 0:
        raise SystemExit("error: --smoke could not make its cached store")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The phases asked for; the JSON saved after each."""
    import torch

    if isinstance(args.memory_sizes, str):
        args.memory_sizes = tuple(int(s) for s in args.memory_sizes.split(",") if s.strip())
    if args.quick and not args.smoke:
        args.seeds, args.tune_n, args.epochs = QUICK["seeds"], QUICK["tune_n"], QUICK["epochs"]
        args.patience, args.views, args.threads = QUICK["patience"], QUICK["views"], QUICK["threads"]
        args.finetune_tiles, args.memory_sizes = QUICK["finetune_tiles"], QUICK["memory_sizes"]
    args.threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    if isinstance(args.augments, str):
        args.augments = [a.strip() for a in args.augments.split(",") if a.strip()]
    args.source = args.source.resolve()
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"--only: unknown {unknown}; use {', '.join(PHASES)}")
    out = args.out or RESULTS / f"heads{'_quick' if args.quick else ''}.json"
    png = out.with_suffix(".png")
    result: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    result.update(
        smoke=args.smoke,
        machine=harness.machine(torch=torch.__version__),
        args={k: str(v) for k, v in vars(args).items() if k != "child"},
    )
    result.setdefault("phase_seconds", {})

    def save() -> None:
        harness.write_json(out, result)

    runners = {"scarce": scarce_phase, "speed": speed_phase, "memory": memory_phase}
    for phase in PHASES:
        if phase not in phases:
            continue
        started = time.perf_counter()
        say(f"phase {phase}")
        try:
            runners[phase](args, result, save)
        except SystemExit:
            raise
        except Exception as error:  # noqa: BLE001 - recorded; the other phases still run
            traceback.print_exc()
            result.setdefault("errors", {})[phase] = f"{type(error).__name__}: {error}"
        result["phase_seconds"][phase] = round(time.perf_counter() - started, 1)
        save()
    result["targets"] = targets(result)
    save()
    plot(result, png)
    print_summary(result)
    print(f"\nwrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
