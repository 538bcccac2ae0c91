"""Search centring on a mixed store: raw cosine vs the table's mean vs the searched pool's mean.

A store of four real datasets from ../shared/data, each ingested as its own `dataset` with embedstore's
own API and embedded with the ImageNet weights of tf_efficientnet_lite0:
  pcam      PatchCamelyon train + valid: every normal patch, tumour (label 1) subsampled to --prevalence;
  amibr     AMi-Br mitotic-figure patches (--amibr of them, Atypical prevalence kept);
  crc       CRC nuclei, a 64 px patch on each of --crc nucleus centres (point annotations);
  idc       every IDC patch (2 patients).
One exact (flat) index centred on the table's mean; every search goes through `store.search` with
`--center none` (raw cosine), `index` (the table's mean) and `pool` (the mean of the tiles --where
leaves). For each of --draws draws of 5 random PCam tumour tiles as positives (mean fusion): the
fraction of tumour tiles among the top 50 / 200 hits, (a) restricted with --where "dataset = 'pcam'",
(b) unrestricted (hits from other datasets count as misses; pool = table there). Each precision is also
recomputed with NumPy from the raw vectors, to check the product's scores.

Writes benchmarks/results/search_centring.json and prints means with 95 % t-intervals over draws and the
ratio to the tumour prevalence among PCam tiles.

    .venv/bin/python benchmarks/search_centring.py [--data ../shared/data] [--store PATH] [--draws 20]
        [--prevalence 0.05] [--amibr 2000] [--crc 2000] [--out PATH]

Needs ../shared/data/{pcam/{train,valid}/{0,1}, ami_br/AMI-BR.csv, ami_br/AMi-Br, crc_nuclei, idc}
(see ../shared/data/README.md); without them it says what is missing and exits 2. The store is kept
(default benchmarks/results/search-centring-store) so a second run skips ingest and embedding.

--smoke: harness.fake_shared_data in a temporary folder, harness.SMOKE_BACKBONE, 2 draws, tumour
prevalence 0.3 (the tiny PCam needs 5 tumour queries).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np
import polars as pl
from proxy_selection import sample_amibr, sample_crc  # the same samplers as that benchmark

import embedstore
from embedstore import IngestOptions
from embedstore.core.schema import LABELS, TILES
from embedstore.storage.embedding_tables import table_name

RESULTS = harness.RESULTS
LITE0 = "tf_efficientnet_lite0.in1k"
CENTRINGS = ("none", "index", "pool")  # raw cosine, the table's mean (the index's), the pool's mean
NAMES = {"none": "raw cosine", "index": "table mean", "pool": "pool mean"}
KS = (50, 200)
SMOKE_KS = (5, 20)  # the smoke store holds about 90 tiles
QUERIES = 5
MPP = {"crc": 0.5, "pcam": 0.97, "amibr": 0.25, "idc": 2.0}  # IDC: low magnification, ~2 um/px
CRC_TILE = 64


def data_needs(data: Path) -> list[str]:
    needed = [
        *(data / "pcam" / split / c for split in ("train", "valid") for c in ("0", "1")),
        data / "ami_br" / "AMI-BR.csv",
        data / "ami_br" / "AMi-Br",
        data / "crc_nuclei" / "nuclei_labels.csv",
        data / "crc_nuclei" / "images",
        data / "idc",
    ]
    return [str(p) for p in needed if not p.exists()]


def sample_pcam(root: Path, prevalence: float, seed: int) -> pl.DataFrame:
    """Every normal patch of train and valid; tumour patches drawn so that they are `prevalence` of all."""
    rng = np.random.default_rng(seed)
    normal = [f"{s}/0/{p.name}" for s in ("train", "valid") for p in sorted((root / s / "0").iterdir())]
    tumour = [f"{s}/1/{p.name}" for s in ("train", "valid") for p in sorted((root / s / "1").iterdir())]
    n = round(len(normal) * prevalence / (1 - prevalence))
    tumour = sorted(tumour[i] for i in rng.choice(len(tumour), size=n, replace=False))
    return pl.DataFrame({"path": normal + tumour, "label": ["0"] * len(normal) + ["1"] * len(tumour)})


def sample_idc(root: Path) -> pl.DataFrame:
    rows = [
        {"path": f"{p.parent.parent.name}/{p.parent.name}/{p.name}", "label": p.parent.name,
         "slide": p.parent.parent.name}
        for p in sorted(root.glob("*/*/*.png"))
    ]  # fmt: skip
    return pl.DataFrame(rows)


def prepare(args: argparse.Namespace, store_path: Path) -> dict[str, Any]:
    """Sample and ingest the four datasets (once), then embed with lite0 (incremental)."""
    out: dict[str, Any] = {}
    if not store_path.exists():
        inputs = store_path.with_name(store_path.name + "-inputs")
        inputs.mkdir(parents=True, exist_ok=True)
        frames = {
            "pcam": sample_pcam(args.data / "pcam", args.prevalence, args.seed),
            "amibr": sample_amibr(args.data / "ami_br", args.amibr, args.seed),
            "crc": sample_crc(args.data / "crc_nuclei" / "nuclei_labels.csv", args.crc, args.seed),
            "idc": sample_idc(args.data / "idc"),
        }
        for name, frame in frames.items():
            frame.write_csv(inputs / f"{name}.csv")
        store = embedstore.init(store_path)
        common = dict(progress=False, on_label_conflict="first")
        plans = {
            "pcam": dict(kind="manifest", images_dir=args.data / "pcam"),
            "amibr": dict(kind="manifest", images_dir=args.data / "ami_br" / "AMi-Br"),
            "crc": dict(
                kind="points", tile_size=CRC_TILE, one_based=True, images_dir=args.data / "crc_nuclei"
            ),
            "idc": dict(kind="manifest", images_dir=args.data / "idc"),
        }
        for name, plan in plans.items():
            options = IngestOptions(task=name, dataset=name, mpp=MPP[name], **plan, **common)
            report = store.ingest([inputs / f"{name}.csv"], options)
            harness.say(f"ingest {name}: {report.summary().splitlines()[1]}")
    store = embedstore.open(store_path)
    key = args.backbone
    catalog = store.catalog
    if not catalog.has_table(table_name(key)) or catalog.count(table_name(key)) < catalog.count(TILES):
        harness.say(f"embedding {catalog.count(TILES)} tiles with {key} (about 100-300 tiles/s on 2 cores)")
        report = store.embed(key, progress=False)
        harness.say(report.summary().splitlines()[0])
        out["embed"] = {"tiles": report.tiles_embedded, "seconds": round(report.seconds, 1)}
    return out


def numpy_top(raw: np.ndarray, rows: np.ndarray, queries: np.ndarray, centre: np.ndarray | None, k: int):
    """Top-k rows (of `rows`, queries left out) by cosine centred on `centre`, with NumPy."""
    x = raw if centre is None else raw - centre
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = unit[queries].mean(axis=0)
    scores = unit[rows] @ (q / np.linalg.norm(q))
    keep = ~np.isin(rows, queries)
    order = np.argsort(-scores[keep], kind="stable")[:k]
    return rows[keep][order]


def measure(args: argparse.Namespace, store: embedstore.Store) -> dict[str, Any]:
    tiles = pl.from_arrow(store.catalog.read(TILES, columns=["tile_id", "dataset"]))
    labels = pl.from_arrow(store.catalog.read(LABELS, columns=["tile_id", "label"], filter="task = 'pcam'"))
    raw, ids, _ = store.embeddings(args.backbone).to_numpy()
    ids = np.asarray(ids).astype(str)
    meta = (
        pl.DataFrame({"tile_id": ids})
        .join(tiles, on="tile_id", how="left")
        .join(labels, on="tile_id", how="left")
    )
    dataset = meta.get_column("dataset").to_numpy()
    tumour = (meta.get_column("label") == "1").fill_null(False).to_numpy()
    pcam_rows = np.flatnonzero(dataset == "pcam")
    prevalence = float(tumour[pcam_rows].mean())
    counts = dict(sorted(meta.group_by("dataset").len().iter_rows()))
    harness.say(f"store: {counts}; PCam tumour prevalence {prevalence:.4f} ({int(tumour.sum())} tiles)")
    store.index(args.backbone, kind="flat", name="exact")  # centred on the table's mean (the default)
    tumour_of = dict(zip(ids, tumour, strict=True))
    means = {"none": None, "index": raw.mean(axis=0, dtype=np.float64)}
    rng = np.random.default_rng(args.seed)
    tumour_rows = np.flatnonzero(tumour)
    scopes = {"pcam": ("dataset = 'pcam'", pcam_rows), "all": (None, np.arange(len(ids)))}
    per_draw: dict[str, dict[str, dict[int, list[float]]]] = {
        s: {c: {k: [] for k in args.ks} for c in CENTRINGS} for s in scopes
    }
    agree = {s: {c: [] for c in CENTRINGS} for s in scopes}
    lines: dict[str, str] = {}
    started = time.perf_counter()
    for _ in range(args.draws):
        queries = np.sort(rng.choice(tumour_rows, size=QUERIES, replace=False))
        for scope, (where, rows) in scopes.items():
            centres = {**means, "pool": raw[rows].mean(axis=0, dtype=np.float64)}
            for centring in CENTRINGS:
                result = store.search(
                    args.backbone,
                    tiles=list(ids[queries]),
                    k=max(args.ks),
                    where=where,
                    center=centring,
                    index="exact",
                )
                lines[f"{scope}/{centring}"] = result.described()
                hits = result.hits.get_column("tile_id").to_list()
                for k in args.ks:
                    per_draw[scope][centring][k].append(float(np.mean([tumour_of[t] for t in hits[:k]])))
                expected = ids[numpy_top(raw, rows, queries, centres[centring], max(args.ks))]
                agree[scope][centring].append(len(set(expected) & set(hits)) / max(args.ks))
    seconds = time.perf_counter() - started
    summary = {
        scope: {
            centring: {
                f"p@{k}": {
                    **harness.t_interval(per_draw[scope][centring][k]),
                    "ratio_to_prevalence": float(np.mean(per_draw[scope][centring][k]) / prevalence),
                }
                for k in args.ks
            }
            for centring in CENTRINGS
        }
        for scope in scopes
    }
    return {
        "tiles_per_dataset": counts,
        "pcam_tiles": len(pcam_rows),
        "pcam_tumour_prevalence": prevalence,
        "draws": args.draws,
        "queries_per_draw": QUERIES,
        "summary": summary,
        "ks": list(args.ks),
        "per_draw": {
            s: {c: {str(k): v for k, v in d.items()} for c, d in per_c.items()}
            for s, per_c in per_draw.items()
        },
        "numpy_overlap_top200": {s: {c: float(np.mean(v)) for c, v in a.items()} for s, a in agree.items()},
        "reported": lines,
        "search_seconds": round(seconds, 2),
    }


def print_summary(result: dict[str, Any]) -> None:
    prevalence = result["pcam_tumour_prevalence"]
    print(f"\nPCam tumour prevalence {prevalence:.3f}; {result['draws']} draws of {QUERIES} tumour queries")
    titles = {"pcam": "--where \"dataset = 'pcam'\"", "all": "unrestricted (whole store)"}
    ks = result["ks"]
    for scope, per_c in result["summary"].items():
        print(f"\n{titles[scope]}")
        print(f"  {'centring':<12}" + "".join(f"{f'P@{k} [95% CI]':>28}{'x prev':>8}" for k in ks))
        for centring, stats in per_c.items():
            cells = ""
            for k in ks:
                s = stats[f"p@{k}"]
                interval = f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
                cells += f"{s['mean']:>12.3f} {interval}{s['ratio_to_prevalence']:>8.2f}"
            print(f"  {NAMES[centring]:<12}{cells}")
    overlap = result["numpy_overlap_top200"]
    print(f"\ntop-200 overlap with NumPy: {json.dumps(overlap)}")
    for key, line in result["reported"].items():
        print(f"  {key}: {line}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--data", type=Path, default=harness.DATA)
    parser.add_argument("--store", type=Path, default=RESULTS / "search-centring-store")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_centring.json")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--prevalence", type=float, default=0.05)
    parser.add_argument("--amibr", type=int, default=2000)
    parser.add_argument("--crc", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.backbone, args.ks = LITE0, KS
    if args.smoke:
        with harness.scratch("search-centring-") as tmp:
            args.data, args.store, args.backbone = (
                harness.fake_shared_data(tmp),
                tmp / "store",
                harness.SMOKE_BACKBONE,
            )
            args.draws, args.prevalence, args.amibr, args.crc, args.ks = 2, 0.3, 20, 20, SMOKE_KS
            return run(args)
    if not args.store.exists():
        missing = data_needs(args.data)
        if missing:
            print(
                f"error: this benchmark needs the real data in {args.data} (see its README.md); missing: "
                f"{', '.join(missing)}. Put the shared data folder beside the repository as ../shared/data "
                "or pass --data PATH.",
                file=sys.stderr,
            )
            return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Prepare the store, measure, write the JSON and print the summary."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "search_centring",
        "smoke": args.smoke,
        "settings": vars(args) | {"data": str(args.data), "store": str(args.store), "out": str(args.out)},
        "backbone": args.backbone,
        "machine": harness.machine(),
    }
    result["prepare"] = prepare(args, args.store)
    result.update(measure(args, embedstore.open(args.store)))
    result["seconds"] = round(time.perf_counter() - started, 1)
    harness.write_json(args.out, result)
    print_summary(result)
    print(f"\nwrote {args.out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
