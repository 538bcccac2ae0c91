"""Proxy-task backbone selection: does ranking backbones by cheap probes on a labelled proxy task
(`crc_nuclei`, 4 nucleus classes, grouped by image) pick the backbone that wins on the tasks we care about
(PCam metastasis, AMi-Br atypical vs normal mitoses), each scored with a linear head?

Phases (`--phases`, comma-separated; default all, in this order; each is resumable):
  prepare     build the store from ../shared/data with embedstore's own API (`store.ingest`):
              crc_nuclei: a stratified subsample of nuclei (every image represented), 64 px point tiles
                  at 20x (0.5 um/px) centred on each nucleus, group = image, labels = the 4 classes;
              pcam: a balanced subsample of `train` + `valid` (all 1000 by default), group `split`;
              amibr: a subsample keeping the 22 % Atypical prevalence, labels Atypical / Normal,
                  group = slide (AMI-BR.csv).
              Sampling is deterministic (--seed); the sample is recorded next to the store
              (<store>-inputs/sample.json) and a store built from another sample is refused.
  embed       `store.embed(key)` for every variant (incremental: done tiles are skipped); tiles/s per
              variant. Keys `get_backbone` does not know are skipped with its reason.
  downstream  per variant, a linear head: embedstore's linear probe (standardised, class-balanced L2
              logistic regression; equal to scikit-learn's LogisticRegressionCV on the same folds within
              0.005), C chosen on validation log-loss by 3 inner folds over C_GRID = 1e-4 .. 1e4
              (10 values). PCam: fit on train (inner folds: tiles independent), score on
              valid: balanced accuracy, AUROC, 95 % CI by bootstrap over valid tiles (1000 resamples,
              seed 0). AMi-Br: 5-fold StratifiedGroupKFold by slide x --seeds seeds (inner 3-fold
              StratifiedGroupKFold): balanced accuracy, AUROC, F1 of Atypical; mean and 95 % t-interval
              over the folds x seeds scores (folds of one seed share data: the interval is optimistic).
  proxy       `store.probe(task="crc_nuclei", backbones=..., folds=5, seeds=--seeds)` (ProbeReport:
              `.ranking`, `.summary`, `.seconds`).
  report      per proxy probe (knn, prototype, linear) x downstream (pcam, amibr) x metric (balanced
              accuracy, AUROC) x subset (all variants, pretrained only): Spearman and Kendall correlation
              of proxy vs downstream scores, and whether the proxy's top pick is the downstream winner
              or inside the winner's 95 % CI; phase wall times. Writes the JSON, prints the tables and
              draws the PNG.

Pretrained variants are the ImageNet (`.in1k`) keys and their layer variants; `.random` and hand-crafted
ones are baselines. Before embedding, downstream and proxy (heavy compute) the script waits while
`benchmarks/search.py` runs (checked every 30 s; --quick, --smoke and --no-wait skip the wait).

Writes benchmarks/results/proxy_selection.json and proxy_selection.png (--quick: *_quick.*, store
proxy-store-quick) and prints a summary.

    .venv/bin/python benchmarks/proxy_selection.py [--phases prepare,embed,downstream,proxy,report]
        [--data ../shared/data] [--store PATH] [--variants K1,K2,...] [--crc-nuclei 2000]
        [--pcam-train 1000] [--pcam-valid 1000] [--amibr 2000] [--seeds 3] [--seed 0] [--quick]
    .venv/bin/python benchmarks/proxy_selection.py --smoke [--out FILE.json]

--smoke: every phase on harness.fake_shared_data in a temporary folder, with SMOKE counts, 1 seed and
two tiny seeded-random timm backbones (no download).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np
import polars as pl

import embedstore
from embedstore import IngestOptions
from embedstore.core.schema import LABELS, TILES
from embedstore.evaluate import folds as splits
from embedstore.probe import classifiers
from embedstore.storage.embedding_tables import table_name

RESULTS = harness.RESULTS
PHASES = ("prepare", "embed", "downstream", "proxy", "report")
LITE2 = "tf_efficientnet_lite2.in1k"
HANDCRAFTED = "handcrafted.color_texture"
VARIANTS = (
    "tf_efficientnet_lite0.in1k",
    "tf_efficientnet_lite1.in1k",
    LITE2,
    f"{LITE2}@stage4",
    f"{LITE2}@stage5",
    f"{LITE2}@stage4+5+6",
    "tf_efficientnet_lite0.random",
    "resnet18.random",
    HANDCRAFTED,
)
PROXY_TASK = "crc_nuclei"
PROBES = ("knn", "prototype", "linear")
DOWNSTREAM = {"pcam": "1", "amibr": "Atypical"}  # task -> positive label
METRICS = ("balanced_accuracy", "auroc")
C_GRID = classifiers.C_GRID  # scikit-learn's LogisticRegressionCV default grid, 1e-4 .. 1e4
BOOTSTRAP = 1000
FOLDS = 5
CRC_TILE = 64  # px at 20x
MPP = {"crc_nuclei": 0.5, "pcam": 0.97, "amibr": 0.25}  # um/px of the files (see ../shared/data/README.md)
QUICK = {"crc_nuclei": 160, "pcam_train": 40, "pcam_valid": 100, "amibr": 150}
SMOKE = {"crc_nuclei": 60, "pcam_train": 20, "pcam_valid": 6, "amibr": 40, "seeds": 1}
SMOKE_VARIANTS = (harness.SMOKE_BACKBONE, "test_vit.random")
WAIT_FOR = "benchmarks/search.py"


def is_pretrained(key: str) -> bool:
    return key.split("@", 1)[0].endswith(".in1k")


def short(key: str) -> str:
    return key.replace("tf_efficientnet_", "").replace(".in1k", "")


def wait_for_search(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Heavy compute waits while the search benchmark runs (print once, check every 30 s)."""
    if args.quick or args.smoke or args.no_wait:
        return
    started, noted = time.perf_counter(), False
    while subprocess.run(["pgrep", "-f", WAIT_FOR], capture_output=True).returncode == 0:
        if not noted:
            harness.say(f"waiting: {WAIT_FOR} is running (checking every 30 s)")
            noted = True
        time.sleep(30)
    if noted:
        waited = time.perf_counter() - started
        result["waited_seconds"] = round(result.get("waited_seconds", 0.0) + waited, 1)
        harness.say(f"{WAIT_FOR} finished; waited {waited:.0f} s")


# -- prepare ------------------------------------------------------------------------------------------------


def data_needs(data: Path) -> list[str]:
    """What of ../shared/data is missing (empty when everything is there)."""
    needed = [
        data / "crc_nuclei" / "nuclei_labels.csv",
        data / "crc_nuclei" / "images",
        *(data / "pcam" / split / c for split in ("train", "valid") for c in ("0", "1")),
        data / "ami_br" / "AMI-BR.csv",
        data / "ami_br" / "AMi-Br" / "Atypical",
        data / "ami_br" / "AMi-Br" / "Normal",
    ]
    return [str(p) for p in needed if not p.exists()]


def largest_remainder(counts: dict[str, int], n: int) -> dict[str, int]:
    """Split n over keys in proportion to counts (largest remainders get the leftovers; ties by key)."""
    total = sum(counts.values())
    quota = {k: n * c / total for k, c in counts.items()}
    out = {k: int(math.floor(q)) for k, q in quota.items()}
    for k in sorted(quota, key=lambda k: (-(quota[k] - out[k]), k))[: n - sum(out.values())]:
        out[k] += 1
    return out


def sample_crc(path: Path, n: int, seed: int) -> pl.DataFrame:
    """n nuclei with class proportions kept (largest remainder) and every image represented: one random
    nucleus per image first (from a class with quota left), then the rest of each class uniformly."""
    frame = pl.read_csv(path).with_row_index("row")
    images = sorted(frame.get_column("image").unique().to_list())
    if n >= frame.height:
        return frame.drop("row")
    if n < len(images):
        raise SystemExit(f"--crc-nuclei {n}: at least {len(images)} (one nucleus per image) are needed")
    rng = np.random.default_rng(seed)
    counts = dict(frame.group_by("label").len().iter_rows())
    quota = largest_remainder(counts, n)
    chosen: list[int] = []
    for image in images:
        rows = frame.filter(
            (pl.col("image") == image) & pl.col("label").is_in([k for k, q in quota.items() if q])
        )
        if rows.height == 0:
            rows = frame.filter(pl.col("image") == image)
        pick = rows.row(int(rng.integers(rows.height)), named=True)
        chosen.append(pick["row"])
        quota[pick["label"]] = max(0, quota[pick["label"]] - 1)
    taken = set(chosen)
    for label in sorted(quota):
        pool = [
            r for r in frame.filter(pl.col("label") == label).get_column("row").to_list() if r not in taken
        ]
        chosen += [pool[i] for i in rng.choice(len(pool), size=min(quota[label], len(pool)), replace=False)]
    return frame.filter(pl.col("row").is_in(chosen)).sort("row").drop("row")


def sample_pcam(root: Path, n_train: int, n_valid: int, seed: int) -> pl.DataFrame:
    """Balanced subsample of train (n_train) and valid (n_valid; all when larger): path, label, split."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("train", n_train), ("valid", n_valid)):
        for label in ("0", "1"):
            files = sorted(p.name for p in (root / split / label).iterdir() if p.is_file())
            keep = len(files) if n // 2 >= len(files) else n // 2
            picked = sorted(files[i] for i in rng.choice(len(files), size=keep, replace=False))
            rows += [{"path": f"{split}/{label}/{f}", "label": label, "split": split} for f in picked]
    return pl.DataFrame(rows)


def sample_amibr(root: Path, n: int, seed: int) -> pl.DataFrame:
    """n figures keeping the Atypical prevalence (largest remainder): path, label, slide, source."""
    frame = pl.read_csv(root / "AMI-BR.csv").select(
        pl.when(pl.col("majority_atypical"))
        .then(pl.lit("Atypical"))
        .otherwise(pl.lit("Normal"))
        .alias("label"),
        pl.col("slide"),
        pl.col("dataset").alias("source"),
        pl.col("uid"),
    )
    frame = frame.with_columns(
        path=pl.col("label") + "/" + pl.col("source") + "_" + pl.col("uid").cast(pl.String) + ".png"
    ).drop("uid")
    if n >= frame.height:
        return frame.select("path", "label", "slide", "source")
    rng = np.random.default_rng(seed)
    parts = []
    for label, k in sorted(largest_remainder(dict(frame.group_by("label").len().iter_rows()), n).items()):
        part = frame.filter(pl.col("label") == label).sort("path")
        parts.append(part[sorted(rng.choice(part.height, size=k, replace=False).tolist())])
    return pl.concat(parts).select("path", "label", "slide", "source")


def sample_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "crc_nuclei": args.crc_nuclei,
        "crc_tile_px": CRC_TILE,
        "pcam_train": args.pcam_train,
        "pcam_valid": args.pcam_valid,
        "amibr": args.amibr,
        "seed": args.seed,
    }


def inputs_dir(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + "-inputs")


def check_sample(store_path: Path, args: argparse.Namespace) -> None:
    """Refuse a store built from another sample (its tasks would mix both samples)."""
    recorded = inputs_dir(store_path) / "sample.json"
    if store_path.exists() and recorded.is_file():
        before = json.loads(recorded.read_text())
        if before != sample_settings(args):
            print(
                f"error: {store_path} was built from the sample {before}, not {sample_settings(args)}; "
                "pass the same counts, another --store, or delete the store and its -inputs folder",
                file=sys.stderr,
            )
            raise SystemExit(2)


def task_counts(store: embedstore.Store, task: str, by: str | None) -> dict[str, Any]:
    """Tiles per class of a task (and per `by` group column: number of groups, or per split)."""
    labels = pl.from_arrow(
        store.catalog.read(LABELS, columns=["tile_id", "label"], filter=f"task = '{task}'")
    )
    out: dict[str, Any] = {
        "tiles": labels.height,
        "per_class": dict(sorted(labels.group_by("label").len().iter_rows())),
    }
    if by is not None:
        tiles = pl.from_arrow(store.catalog.read(TILES, columns=["tile_id", by]))
        joined = labels.join(tiles, on="tile_id", how="left")
        if by == "split":
            out["per_split"] = {
                split: dict(sorted(part.group_by("label").len().iter_rows()))
                for (split,), part in sorted(joined.group_by(by), key=lambda kv: str(kv[0]))
            }
        else:
            out[f"{by}s"] = joined.get_column(by).n_unique()
    return out


def prepare(args: argparse.Namespace, store_path: Path) -> dict[str, Any]:
    """Sample, write the manifests, ingest the three tasks; counts per class."""
    data = args.data
    inputs = inputs_dir(store_path)
    inputs.mkdir(parents=True, exist_ok=True)
    crc = sample_crc(data / "crc_nuclei" / "nuclei_labels.csv", args.crc_nuclei, args.seed)
    pcam = sample_pcam(data / "pcam", args.pcam_train, args.pcam_valid, args.seed)
    amibr = sample_amibr(data / "ami_br", args.amibr, args.seed)
    for name, frame in (("crc_nuclei", crc), ("pcam", pcam), ("amibr", amibr)):
        frame.write_csv(inputs / f"{name}.csv")
    store = embedstore.init(store_path, exist_ok=True)
    (inputs / "sample.json").write_text(json.dumps(sample_settings(args), indent=1))
    common = dict(progress=False, on_label_conflict="first")
    plans = [
        (
            "crc_nuclei",
            IngestOptions(
                kind="points",
                task="crc_nuclei",
                dataset="crc_nuclei",
                tile_size=CRC_TILE,
                mpp=MPP["crc_nuclei"],
                one_based=True,
                images_dir=data / "crc_nuclei",
                **common,
            ),
        ),
        (
            "pcam",
            IngestOptions(
                kind="manifest",
                task="pcam",
                dataset="pcam",
                mpp=MPP["pcam"],
                images_dir=data / "pcam",
                **common,
            ),
        ),
        (
            "amibr",
            IngestOptions(
                kind="manifest",
                task="amibr",
                dataset="amibr",
                mpp=MPP["amibr"],
                images_dir=data / "ami_br" / "AMi-Br",
                **common,
            ),
        ),
    ]
    out: dict[str, Any] = {"settings": sample_settings(args), "inputs": str(inputs), "ingest": {}}
    for task, options in plans:
        report = store.ingest([inputs / f"{task}.csv"], options)
        harness.say(f"ingest {task}: {report.summary().splitlines()[1]}")
        record = report.to_dict()
        out["ingest"][task] = {
            k: record[k]
            for k in ("tiles_added", "tiles_present", "labels_written", "copies", "seconds", "tiles_per_s")
        }
        out["ingest"][task]["label_conflicts"] = len(report.label_conflicts)
    out["counts"] = {
        "crc_nuclei": task_counts(store, "crc_nuclei", "image"),
        "pcam": task_counts(store, "pcam", "split"),
        "amibr": task_counts(store, "amibr", "slide"),
    }
    out["tiles_in_store"] = store.catalog.count(TILES)
    return out


# -- embed --------------------------------------------------------------------------------------------------


def usable_variants(variants: list[str]) -> tuple[list[str], dict[str, str]]:
    """(keys get_backbone knows, {key: why skipped})."""
    from embedstore.backbones import get_backbone

    ok, skipped = [], {}
    for key in variants:
        try:
            get_backbone(key)
            ok.append(key)
        except Exception as error:  # noqa: BLE001 - an unknown key is skipped with the reason
            skipped[key] = str(error).splitlines()[0]
    return ok, skipped


def embedded(store: embedstore.Store, key: str) -> bool:
    return store.catalog.has_table(table_name(key)) and store.catalog.count(table_name(key)) > 0


def embed_variants(store: embedstore.Store, variants: list[str], result: dict[str, Any], save: Any) -> None:
    ok, skipped = usable_variants(variants)
    for key, why in skipped.items():
        harness.say(f"note: skipping {key}: {why} (re-run when it exists)")
    records = result.setdefault("embedding", {})
    tiles = store.catalog.count(TILES)
    for key in ok:
        try:
            report = store.embed(key, progress=False)
        except Exception as error:  # noqa: BLE001 - one variant failing must not stop the others
            skipped[key] = f"embed failed: {str(error).splitlines()[0]}"
            harness.say(f"note: skipping {key}: {skipped[key]}")
            traceback.print_exc()
            continue
        harness.say(report.summary().splitlines()[0])
        record = records.get(key, {})
        if report.tiles_embedded:
            record = {
                "tiles_embedded": record.get("tiles_embedded", 0) + report.tiles_embedded,
                "seconds": round(record.get("seconds", 0.0) + report.seconds, 2),
                "pipeline_seconds": round(record.get("pipeline_seconds", 0.0) + report.pipeline_seconds, 2),
                "last_run": {
                    k: v
                    for k, v in report.to_dict().items()
                    if k
                    in (
                        "tiles_embedded",
                        "seconds",
                        "pipeline_seconds",
                        "tiles_per_s",
                        "device",
                        "precision",
                        "batch_size",
                        "workers",
                        "threads",
                    )
                },
            }
            record["tiles_per_s"] = round(record["tiles_embedded"] / max(record["seconds"], 1e-9), 2)
            record["pipeline_tiles_per_s"] = round(
                record["tiles_embedded"] / max(record["pipeline_seconds"], 1e-9), 2
            )
        record["rows"] = store.catalog.count(table_name(key))
        record["tiles_in_store"] = tiles
        records[key] = record
        result["skipped"] = skipped
        save()
    result["skipped"] = skipped


# -- downstream ---------------------------------------------------------------------------------------------


def task_arrays(
    store: embedstore.Store, key: str, task: str, group: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X float32, y 0/1 with the task's positive label = 1, group column) of one task."""
    table = store.embeddings(key).task(task).columns(group).to_arrow()
    vectors = table.column("vector").combine_chunks()
    x = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(table), -1)
    labels = np.asarray(table.column("label").to_pylist(), dtype=object).astype(str)
    y = (labels == DOWNSTREAM[task]).astype(np.int64)
    groups = np.asarray(table.column(group).to_pylist(), dtype=object).astype(str)
    return x, y, groups


def fit_head(
    x: np.ndarray, y: np.ndarray, test: np.ndarray, groups: np.ndarray, seed: int
) -> tuple[np.ndarray, float]:
    """The linear head: embedstore's linear probe (standardised, class-balanced L2 logistic regression,
    scikit-learn's objective; C from C_GRID by 3 inner group-aware folds on validation log-loss), refit on
    all of `x`; (positive-class probabilities of `test`, chosen C). Equal to scikit-learn's
    LogisticRegressionCV on the same folds within 0.005 (tests/probe, benchmarks/probe_speed.py) and
    many times faster, which is what lets this benchmark score every variant on two tasks."""
    inner = splits.inner_folds(y, groups, 3, seed)
    fit = classifiers.linear_probabilities(x, y, test, 2, inner, cs=C_GRID)
    return fit.probabilities[:, 1], fit.c


def scores(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    pred = (prob >= 0.5).astype(np.int64)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "auroc": float(roc_auc_score(y, prob)),
        "f1_positive": float(f1_score(y, pred, pos_label=1, zero_division=0)),
    }


def bootstrap_ci(y: np.ndarray, prob: np.ndarray, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile 95 % CIs of balanced accuracy and AUROC over BOOTSTRAP resamples of the scored tiles."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    pred = (prob >= 0.5).astype(np.int64)
    bacc, auc = [], []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(y), len(y))
        yy, pp = y[idx], pred[idx]
        if yy.min() == yy.max():
            continue
        bacc.append(0.5 * ((pp[yy == 1] == 1).mean() + (pp[yy == 0] == 0).mean()))
        auc.append(roc_auc_score(yy, prob[idx]))
    return {
        "balanced_accuracy": (float(np.percentile(bacc, 2.5)), float(np.percentile(bacc, 97.5))),
        "auroc": (float(np.percentile(auc, 2.5)), float(np.percentile(auc, 97.5))),
    }


def downstream_pcam(store: embedstore.Store, key: str) -> dict[str, Any]:
    x, y, split = task_arrays(store, key, "pcam", "split")
    train, valid = split == "train", split == "valid"
    prob, c = fit_head(x[train], y[train], x[valid], np.arange(int(train.sum())).astype(str), 0)
    point = scores(y[valid], prob)
    ci = bootstrap_ci(y[valid], prob)
    out: dict[str, Any] = {
        "train": int(train.sum()),
        "valid": int(valid.sum()),
        "C": c,
    }
    for metric in METRICS:
        out[metric] = {"mean": point[metric], "ci_low": ci[metric][0], "ci_high": ci[metric][1]}
    out["f1_positive"] = {"mean": point["f1_positive"]}
    return out


def downstream_amibr(store: embedstore.Store, key: str, seeds: int) -> dict[str, Any]:
    from sklearn.model_selection import StratifiedGroupKFold

    x, y, slide = task_arrays(store, key, "amibr", "slide")
    per_fold: dict[str, list[float]] = {"balanced_accuracy": [], "auroc": [], "f1_positive": []}
    chosen_c = []
    for seed in range(seeds):
        outer = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed)
        for train, test in outer.split(x, y, slide):
            prob, c = fit_head(x[train], y[train], x[test], slide[train], seed)
            chosen_c.append(c)
            for metric, value in scores(y[test], prob).items():
                per_fold[metric].append(value)
    out: dict[str, Any] = {
        "tiles": len(y),
        "positives": int(y.sum()),
        "slides": len(set(slide.tolist())),
        "folds": FOLDS,
        "seeds": seeds,
        "C": {str(c): chosen_c.count(c) for c in sorted(set(chosen_c))},
    }
    for metric, values in per_fold.items():
        out[metric] = {**harness.t_interval(values), "per_fold": [round(v, 4) for v in values]}
    return out


def run_downstream(
    store: embedstore.Store, variants: list[str], args: argparse.Namespace, result: dict[str, Any], save: Any
) -> None:
    records = result.setdefault("downstream", {})
    for key in variants:
        if not embedded(store, key):
            continue
        signature = {
            "rows": store.catalog.count(table_name(key)),
            "sample": sample_settings(args),
            "seeds": args.seeds,
            "c_grid": list(C_GRID),
        }
        if records.get(key, {}).get("signature") == signature:
            harness.say(f"downstream {key}: done before, kept")
            continue
        started = time.perf_counter()
        pcam = downstream_pcam(store, key)
        pcam_s = time.perf_counter() - started
        amibr = downstream_amibr(store, key, args.seeds)
        records[key] = {
            "signature": signature,
            "pcam": pcam,
            "amibr": amibr,
            "seconds": {"pcam": round(pcam_s, 1), "amibr": round(time.perf_counter() - started - pcam_s, 1)},
        }
        harness.say(
            f"downstream {key}: PCam bacc {pcam['balanced_accuracy']['mean']:.3f} "
            f"AUROC {pcam['auroc']['mean']:.3f}"
            f" | AMi-Br bacc {amibr['balanced_accuracy']['mean']:.3f} AUROC {amibr['auroc']['mean']:.3f}"
            f" ({time.perf_counter() - started:.0f} s)"
        )
        save()


# -- proxy --------------------------------------------------------------------------------------------------


def proxy_ranking(store: embedstore.Store, variants: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The probe ranking on crc_nuclei through `store.probe`."""
    keys = [k for k in variants if embedded(store, k)]
    started = time.perf_counter()
    try:
        report = store.probe(task=PROXY_TASK, backbones=keys, folds=FOLDS, seeds=args.seeds)
    except Exception as error:  # noqa: BLE001 - recorded; the other phases still run
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    wall = time.perf_counter() - started
    ranking = report.ranking
    return {
        "task": PROXY_TASK,
        "backbones": keys,
        "folds": FOLDS,
        "seeds": args.seeds,
        "seconds": float(report.seconds),
        "wall_seconds": round(wall, 2),
        "ranking": ranking.to_dicts(),
        "summary": report.summary.to_dicts(),
        "indicators": report.indicators,
        "notes": list(report.notes),
    }


# -- report -------------------------------------------------------------------------------------------------


def proxy_scores(proxy: dict[str, Any] | None) -> dict[str, dict[str, dict[str, Any]]]:
    """probe -> backbone -> {mean, ci_low, ci_high, rank, tied_with_best}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in (proxy or {}).get("ranking", []):
        out.setdefault(row["probe"], {})[row["backbone"]] = row
    return out


def downstream_ranking(downstream: dict[str, Any], task: str, metric: str) -> list[dict[str, Any]]:
    rows = [
        {
            "backbone": k,
            "pretrained": is_pretrained(k),
            **{f: r[task][metric][f] for f in ("mean", "ci_low", "ci_high")},
        }
        for k, r in downstream.items()
    ]
    rows.sort(key=lambda r: -r["mean"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def compare(
    proxy: dict[str, dict[str, Any]], down: dict[str, dict[str, Any]], keys: list[str]
) -> dict[str, Any]:
    """Rank correlation of proxy vs downstream means over keys; is the proxy's pick the winner / in its CI."""
    from scipy import stats

    keys = [k for k in keys if k in proxy and k in down]
    out: dict[str, Any] = {"n": len(keys), "backbones": keys}
    if len(keys) < 2:
        return out
    px = [proxy[k]["mean"] for k in keys]
    dy = [down[k]["mean"] for k in keys]
    if len(keys) >= 3 and len(set(px)) > 1 and len(set(dy)) > 1:
        rho, p_rho = stats.spearmanr(px, dy)
        tau, p_tau = stats.kendalltau(px, dy)
        out.update(spearman=float(rho), spearman_p=float(p_rho), kendall=float(tau), kendall_p=float(p_tau))
    pick = max(keys, key=lambda k: proxy[k]["mean"])
    winner = max(keys, key=lambda k: down[k]["mean"])
    order = sorted(keys, key=lambda k: -down[k]["mean"])
    out.update(
        proxy_pick=pick,
        downstream_winner=winner,
        pick_downstream_rank=order.index(pick) + 1,
        pick_downstream=down[pick]["mean"],
        winner_downstream=down[winner]["mean"],
        winner_ci=[down[winner]["ci_low"], down[winner]["ci_high"]],
        pick_is_winner=pick == winner,
        pick_within_winner_ci=bool(down[pick]["mean"] >= down[winner]["ci_low"]),
        regret=down[winner]["mean"] - down[pick]["mean"],
        downstream_within_winner_ci=[k for k in order if down[k]["mean"] >= down[winner]["ci_low"]],
        proxy_tied_with_best=[k for k in keys if proxy[k].get("tied_with_best")],
    )
    return out


def build_report(result: dict[str, Any]) -> dict[str, Any]:
    downstream = result.get("downstream", {})
    proxy = proxy_scores(result.get("proxy"))
    report: dict[str, Any] = {"downstream_rankings": {}, "proxy_rankings": {}, "comparisons": []}
    for task in DOWNSTREAM:
        for metric in METRICS:
            report["downstream_rankings"][f"{task}/{metric}"] = downstream_ranking(downstream, task, metric)
    for probe, by_key in proxy.items():
        report["proxy_rankings"][probe] = sorted(
            ({"backbone": k, "pretrained": is_pretrained(k), **v} for k, v in by_key.items()),
            key=lambda r: -r["mean"],
        )
    keys = list(downstream)
    for probe in [p for p in PROBES if p in proxy] + [p for p in proxy if p not in PROBES]:
        for task in DOWNSTREAM:
            for metric in METRICS:
                down = {k: r[task][metric] for k, r in downstream.items()}
                for subset, members in (("all", keys), ("pretrained", [k for k in keys if is_pretrained(k)])):
                    report["comparisons"].append(
                        {
                            "probe": probe,
                            "downstream": task,
                            "metric": metric,
                            "subset": subset,
                            **compare(proxy[probe], down, members),
                        }
                    )
    return report


def work_seconds(result: dict[str, Any], variants: list[str]) -> dict[str, float | None]:
    """Wall time of the work of each phase for these variants, summed over runs (a re-run that finds the
    work done adds nothing): prepare and report as last measured, embed and downstream summed over
    variants, proxy as `ProbeReport.seconds`."""
    last = result.get("last_run_seconds", {})
    emb, down = result.get("embedding", {}), result.get("downstream", {})
    return {
        "prepare": last.get("prepare"),
        "embed": round(sum(emb[k].get("seconds", 0.0) for k in variants if k in emb), 1),
        "downstream": round(sum(sum(down[k]["seconds"].values()) for k in variants if k in down), 1),
        "proxy": round(result["proxy"]["seconds"], 1) if "seconds" in result.get("proxy", {}) else None,
        "report": last.get("report"),
    }


def fmt_ci(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    if "ci_low" not in r:
        return f"{r['mean']:.3f}"
    return f"{r['mean']:.3f} [{r['ci_low']:.3f},{r['ci_high']:.3f}]"


def print_summary(result: dict[str, Any]) -> None:
    prep = result.get("prepare", {})
    if prep.get("counts"):
        print("\n== data (tiles per class) ==")
        for task, c in prep["counts"].items():
            extra = {k: v for k, v in c.items() if k not in ("tiles", "per_class")}
            print(f"{task:<11}{c['tiles']:>6}  {c['per_class']}  {extra}")
    emb = result.get("embedding", {})
    down = result.get("downstream", {})
    proxy = proxy_scores(result.get("proxy"))
    print("\n== downstream: linear head (balanced accuracy / AUROC, 95 % CI) ==")
    header = (
        f"{'variant':<24}{'pre':>4}{'dim':>6}{'tiles/s':>9}  {'PCam bacc':<22}{'PCam AUROC':<22}"
        f"{'AMi-Br bacc':<22}{'AMi-Br AUROC':<22}{'AMi-Br F1 atyp':<22}"
        + "".join(f"{'proxy ' + p:<22}" for p in proxy)
    )
    print(header)
    print("-" * len(header))
    for key in result.get("variants", []):
        d = down.get(key)
        dim = result.get("dims", {}).get(key, "")
        tps = emb.get(key, {}).get("tiles_per_s", "")
        cells = (
            [fmt_ci(d["pcam"][m]) for m in METRICS]
            + [fmt_ci(d["amibr"][m]) for m in (*METRICS, "f1_positive")]
            if d
            else ["-"] * 5
        )
        print(
            f"{short(key):<24}{'yes' if is_pretrained(key) else 'no':>4}{dim!s:>6}{tps!s:>9}  "
            + "".join(f"{c:<22}" for c in cells)
            + "".join(f"{fmt_ci(proxy[p].get(key)):<22}" for p in proxy)
        )
    for key, why in result.get("skipped", {}).items():
        print(f"{short(key):<24} skipped: {why}")
    report = result.get("report", {})
    for name, rows in report.get("downstream_rankings", {}).items():
        print(f"ranking {name:<26}" + " > ".join(short(r["backbone"]) for r in rows))
    for probe, rows in report.get("proxy_rankings", {}).items():
        print(f"ranking proxy {probe:<20}" + " > ".join(short(r["backbone"]) for r in rows))
    if proxy:
        print("\n== proxy ranking vs downstream ranking ==")
        print(
            f"{'probe':<10}{'downstream':<12}{'metric':<19}{'subset':<11}{'n':>3}{'spearman':>10}{'(p)':>7}"
            f"{'kendall':>9}{'(p)':>7}  {'proxy pick':<22}{'winner':<22}{'pick rank':>9}  in CI  regret"
        )
        for c in report.get("comparisons", []):
            if "proxy_pick" not in c:
                continue
            rho = f"{c['spearman']:>10.2f}{c['spearman_p']:>7.2f}" if "spearman" in c else f"{'-':>10}{'':>7}"
            tau = f"{c['kendall']:>9.2f}{c['kendall_p']:>7.2f}" if "kendall" in c else f"{'-':>9}{'':>7}"
            print(
                f"{c['probe']:<10}{c['downstream']:<12}{c['metric']:<19}{c['subset']:<11}{c['n']:>3}"
                f"{rho}{tau}  {short(c['proxy_pick']):<22}{short(c['downstream_winner']):<22}"
                f"{c['pick_downstream_rank']:>9}  "
                f"{'yes' if c['pick_within_winner_ci'] else 'no':<5}  {c['regret']:.3f}"
            )
    elif result.get("proxy", {}) and "error" in result["proxy"]:
        print(f"\nproxy: failed: {result['proxy']['error']}")
    else:
        print("\nproxy: not run (--phases without proxy); correlations need it")
    times = result.get("phase_seconds", {})
    print("\n== wall time (s) ==")
    print("  ".join(f"{k} {v:.0f}" for k, v in times.items() if v is not None))
    if emb:
        print(
            "embedding per variant: "
            + ", ".join(
                f"{short(k)} {v['seconds']:.0f} s ({v['tiles_per_s']} tiles/s)"
                for k, v in emb.items()
                if "seconds" in v
            )
        )
    if down:
        print(
            "downstream per variant (PCam + AMi-Br): "
            + ", ".join(
                f"{short(k)} {v['seconds']['pcam'] + v['seconds']['amibr']:.0f} s" for k, v in down.items()
            )
        )
    if result.get("proxy") and "seconds" in result["proxy"]:
        print(f"proxy (store.probe, all variants): {result['proxy']['seconds']:.1f} s")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    down = result.get("downstream", {})
    proxy = proxy_scores(result.get("proxy"))
    colour = {True: "tab:blue", False: "tab:orange"}
    comparisons = {
        (c["probe"], c["downstream"], c["metric"], c["subset"]): c
        for c in result.get("report", {}).get("comparisons", [])
    }
    if not proxy:  # downstream only: bars with CIs per task
        fig, axes = plt.subplots(
            1, len(DOWNSTREAM), figsize=(7 * len(DOWNSTREAM), 0.45 * max(4, len(down)) + 1.5), squeeze=False
        )
        for ax, task in zip(axes[0], DOWNSTREAM, strict=True):
            rows = downstream_ranking(down, task, "balanced_accuracy")[::-1]
            y = np.arange(len(rows))
            means = [r["mean"] for r in rows]
            err = [[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]]
            ax.barh(y, means, xerr=err, color=[colour[r["pretrained"]] for r in rows], capsize=3)
            ax.set_yticks(y, [short(r["backbone"]) for r in rows], fontsize=8)
            ax.set_xlim(0.4, 1.0)
            ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
            ax.set_xlabel("balanced accuracy (linear head), 95 % CI")
            ax.set_title(f"{task}: downstream (proxy: not run)")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    probes = [p for p in PROBES if p in proxy] + [p for p in proxy if p not in PROBES]
    fig, axes = plt.subplots(
        len(DOWNSTREAM), len(probes), figsize=(5.5 * len(probes), 4.8 * len(DOWNSTREAM)), squeeze=False
    )
    for i, task in enumerate(DOWNSTREAM):
        for j, probe in enumerate(probes):
            ax = axes[i][j]
            for key, d in down.items():
                p = proxy[probe].get(key)
                if p is None:
                    continue
                q = d[task]["balanced_accuracy"]
                ax.errorbar(
                    p["mean"],
                    q["mean"],
                    xerr=[[p["mean"] - p["ci_low"]], [p["ci_high"] - p["mean"]]],
                    yerr=[[q["mean"] - q["ci_low"]], [q["ci_high"] - q["mean"]]],
                    fmt="o",
                    color=colour[is_pretrained(key)],
                    capsize=2,
                    markersize=5,
                )
                ax.annotate(
                    short(key), (p["mean"], q["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
            parts = []
            for subset in ("all", "pretrained"):
                c = comparisons.get((probe, task, "balanced_accuracy", subset), {})
                if "spearman" in c:
                    parts.append(f"{subset}: ρ {c['spearman']:.2f}, τ {c['kendall']:.2f} (n {c['n']})")
            ax.set_title(f"{probe} probe on {PROXY_TASK} vs {task}\n" + "; ".join(parts), fontsize=9)
            ax.set_xlabel(f"proxy balanced accuracy ({probe}), 95 % CI")
            ax.set_ylabel(f"{task} balanced accuracy (linear head), 95 % CI")
            ax.grid(True, alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour[t]) for t in (True, False)]
    fig.legend(
        handles, ["ImageNet pretrained", "baseline (random / hand-crafted)"], loc="lower center", ncol=2
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--data", type=Path, default=harness.DATA, help="the shared data folder")
    parser.add_argument("--store", type=Path, default=None, help="store path [results/proxy-store]")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated backbone keys")
    parser.add_argument("--crc-nuclei", type=int, default=2000, help="nuclei sampled from crc_nuclei")
    parser.add_argument("--pcam-train", type=int, default=1000, help="PCam train tiles (balanced)")
    parser.add_argument(
        "--pcam-valid", type=int, default=1000, help="PCam valid tiles (balanced; 1000 = all)"
    )
    parser.add_argument("--amibr", type=int, default=2000, help="AMi-Br figures (prevalence kept)")
    parser.add_argument("--seeds", type=int, default=3, help="CV seeds (AMi-Br folds and the proxy probe)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--no-wait", action="store_true", help=f"do not wait while {WAIT_FOR} runs")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny counts (overriding the count flags), own store and JSON, no waiting",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path [results/proxy_selection.json]")
    args = parser.parse_args(argv)
    if args.smoke:
        with harness.scratch("proxy-selection-") as tmp:
            vars(args).update(SMOKE, data=harness.fake_shared_data(tmp), store=tmp / "store")
            args.variants, args.phases = ",".join(SMOKE_VARIANTS), ",".join(PHASES)
            return run(args, parser)
    return run(args, parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The phases asked for, in order; the JSON saved after each."""
    if args.quick:
        args.crc_nuclei, args.pcam_train, args.pcam_valid, args.amibr = (
            QUICK["crc_nuclei"],
            QUICK["pcam_train"],
            QUICK["pcam_valid"],
            QUICK["amibr"],
        )
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"--phases: unknown {unknown}; use {', '.join(PHASES)}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    suffix = "_quick" if args.quick else ""
    store_path = (args.store or RESULTS / f"proxy-store{'-quick' if args.quick else ''}").resolve()
    out = args.out or RESULTS / f"proxy_selection{suffix}.json"
    png = out.with_suffix(".png")
    args.data = args.data.resolve()

    if "prepare" in phases and (missing := data_needs(args.data)):
        print(
            f"error: the prepare phase needs the real data in {args.data} (see its README.md): "
            f"crc_nuclei/ (nuclei_labels.csv + images/), pcam/{{train,valid}}/{{0,1}}/, ami_br/AMI-BR.csv + "
            f"ami_br/AMi-Br/{{Atypical,Normal}}/; missing: {', '.join(missing)}. Pass --data PATH, or skip "
            "prepare (--phases embed,...) with a store already built",
            file=sys.stderr,
        )
        return 2
    if "prepare" not in phases and not store_path.is_dir():
        print(
            f"error: no store at {store_path}; run the prepare phase first (--phases prepare,...)",
            file=sys.stderr,
        )
        return 2
    check_sample(store_path, args)

    result: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    result.update(
        machine=harness.machine(),
        smoke=args.smoke,
        args={k: str(v) for k, v in vars(args).items()},
        store=str(store_path),
        variants=variants,
        downstream_method={
            "head": "embedstore.probe.classifiers.linear_probabilities: standardised, class-balanced L2 "
            "logistic regression (scikit-learn's objective, L-BFGS-B)",
            "C_grid": list(C_GRID),
            "C_selection": "validation log-loss over 3 inner stratified folds (PCam train: tiles "
            "independent; AMi-Br training folds: grouped by slide), warm-started C path",
            "threshold": "0.5 on the predicted probability (balanced class weights)",
            "pcam": "fit on train, scored on valid; 95 % CI: percentile bootstrap over valid tiles, "
            f"{BOOTSTRAP} resamples, seed 0",
            "amibr": f"{FOLDS}-fold StratifiedGroupKFold by slide x {args.seeds} seeds; mean and 95 % "
            "t-interval over the folds x seeds scores (optimistic: folds of different seeds share tiles)",
            "comparison": "Spearman / Kendall (scipy.stats) of proxy means vs downstream means over the "
            "subset; proxy pick = highest proxy mean in the subset; pick_within_winner_ci: its downstream "
            "mean >= the downstream winner's ci_low; proxy_tied_with_best: the probe's own paired test "
            "against its best over all probed variants",
        },
    )
    result.setdefault("last_run_seconds", {})

    def save() -> None:
        harness.write_json(out, result)

    store: embedstore.Store | None = None
    if "prepare" in phases:
        started = time.perf_counter()
        harness.say(f"prepare: sampling {sample_settings(args)} from {args.data} into {store_path}")
        result["prepare"] = prepare(args, store_path)
        result["last_run_seconds"]["prepare"] = round(time.perf_counter() - started, 1)
        save()
    store = embedstore.open(store_path)
    usable, skipped = usable_variants(variants)
    result["skipped"] = skipped
    from embedstore.backbones import get_backbone

    result["dims"] = {k: get_backbone(k).spec.dim for k in usable}
    result["pretrained"] = {k: is_pretrained(k) for k in variants}
    if "embed" in phases:
        wait_for_search(args, result)
        started = time.perf_counter()
        embed_variants(store, variants, result, save)
        result["last_run_seconds"]["embed"] = round(time.perf_counter() - started, 1)
        save()
    if "downstream" in phases:
        wait_for_search(args, result)
        started = time.perf_counter()
        run_downstream(store, variants, args, result, save)
        result["last_run_seconds"]["downstream"] = round(time.perf_counter() - started, 1)
        save()
    if "proxy" in phases:
        wait_for_search(args, result)
        started = time.perf_counter()
        proxy = proxy_ranking(store, variants, args)
        result["proxy"] = proxy
        result["last_run_seconds"]["proxy"] = round(time.perf_counter() - started, 1)
        save()
    if "report" in phases:
        started = time.perf_counter()
        view = {
            **result,
            "downstream": {k: v for k, v in result.get("downstream", {}).items() if k in variants},
        }
        result["report"] = view["report"] = build_report(view)
        plot(view, png)
        result["last_run_seconds"]["report"] = round(time.perf_counter() - started, 1)
        result["phase_seconds"] = view["phase_seconds"] = work_seconds(result, variants)
        save()
        print_summary(view)
        print(f"\nwrote {out} and {png}")
    else:
        save()
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
