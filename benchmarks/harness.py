"""What every benchmark shares: paths, the shared data, machine facts, timing, intervals and results.

A benchmark imports this module before embedstore (`import harness`, run as `python benchmarks/x.py`):
it puts the repository root on sys.path once, so the checkout's own embedstore is measured.

Each benchmark's `main(argv)` takes `--smoke`: a run of seconds on tiny generated data (no
../shared/data, no network, no downloaded weights) through the same code path, writing the same JSON;
tests/test_benchmarks.py runs them all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the checkout first, ahead of benchmarks/ (where `python benchmarks/x.py` starts): benchmarks/heads.py
# must not hide the `heads` package
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
SMOKE_BACKBONE = "test_efficientnet.random"  # timm's tiny test CNN (160 px), seeded weights: no download
SMOKE_HELP = "a run of seconds on tiny generated data (no ../shared/data): checks the code path, not speed"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of `doc`, with --smoke."""
    found = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    found.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    return found


def missing_data(path: Path, what: str = "the shared data folder") -> int:
    """Say in one line that `path` is missing and how to get it (or run --smoke); exit status 2."""
    print(
        f"error: {path} not found; this benchmark needs {what} beside the repository as ../shared/data "
        "(see its README), or run it with --smoke",
        file=sys.stderr,
    )
    return 2


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(**extra: Any) -> dict[str, Any]:
    """Facts about this machine for a result's JSON, and `extra`."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "load_average": os.getloadavg(),
        **extra,
    }


def say(message: str) -> None:
    """A progress line with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def t_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the 95 % t-interval of the mean."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    half = float(stats.t.ppf(0.975, len(v) - 1) * sd / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "n": len(v)}


def median_seconds(run: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """The median wall time of `repeats` calls of `run`, and every call's time."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), times


def write_json(path: Path, result: Any, indent: int = 1) -> Path:
    """Write `result` as JSON at `path` (folders made); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent, default=_plain) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | tuple | set):
        return list(value)
    return str(value)


def print_targets(targets: Sequence[dict[str, Any]]) -> None:
    """One line a target: what it asks, the value measured, pass or not."""
    print(f"\n{'target':<60} {'value':>9}  pass")
    for target in targets:
        print(f"{target['target']:<60} {target['value']!s:>9}  {target['pass']}")


@contextlib.contextmanager
def scratch(prefix: str = "bench-", parent: Path | None = None) -> Iterator[Path]:
    """A temporary folder (under `parent`, e.g. a big disk; default: the system's), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
        yield Path(tmp)


def rss_bytes(field: str = "VmRSS") -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes; 0 where unreadable."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


# -- tiny generated data for --smoke -------------------------------------------------------------------


def write_jpegs(folder: Path, n: int, seed: int, side: int = 96, prefix: str = "tile") -> list[Path]:
    """`n` random-texture RGB JPEGs of `side` px in `folder`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    base = rng.integers(60, 200, 3)
    for i in range(n):
        pixels = np.clip(base + rng.normal(0, 40, (side, side, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{prefix}{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def fake_pcam(root: Path, per_class: int, side: int = 96) -> Path:
    """A PCam-shaped folder (`train/{0,1}`, `valid/{0,1}` of JPEGs) at `root/pcam`; returns it."""
    pcam = root / "pcam"
    for seed, (split, label) in enumerate((s, c) for s in ("train", "valid") for c in ("0", "1")):
        count = per_class if split == "train" else max(2, per_class // 4)
        write_jpegs(pcam / split / label, count, seed=seed, side=side, prefix=f"{split}{label}_")
    return pcam


def fake_shared_data(root: Path, per_class: int = 12) -> Path:
    """A tiny stand-in for ../shared/data at `root/data` with the same layout and file formats: pcam/
    (see fake_pcam), ami_br/ (AMI-BR.csv + AMi-Br/{Atypical,Normal}/<dataset>_<uid>.png), crc_nuclei/
    (nuclei_labels.csv of points on images/img<i>.png, 4 classes) and idc/<patient>/{0,1}/*.png.
    Returns the data folder."""
    data = root / "data"
    fake_pcam(data, per_class)
    rng = np.random.default_rng(1)
    rows = ["index,slide,dataset,uid,x,y,majority_atypical"]
    for uid in range(4 * per_class):
        atypical = uid % 4 == 0  # 25 % Atypical
        folder = data / "ami_br" / "AMi-Br" / ("Atypical" if atypical else "Normal")
        _noise_image(folder / f"MIDOG21_{uid}.png", rng, 64)
        rows.append(f"{uid},{uid % 10:03d}.tiff,MIDOG21,{uid},10,10,{atypical}")
    (data / "ami_br" / "AMI-BR.csv").write_text("\n".join(rows) + "\n")
    classes = ("epithelial", "fibroblast", "inflammatory", "others")
    points = ["image,split,x,y,label"]
    for image in range(1, 7):
        _noise_image(data / "crc_nuclei" / "images" / f"img{image}.png", rng, 200)
        for n in range(per_class):
            x, y = rng.uniform(33, 167, 2)
            points.append(f"images/img{image}.png,train,{x:.2f},{y:.2f},{classes[(n + image) % 4]}")
    (data / "crc_nuclei" / "nuclei_labels.csv").write_text("\n".join(points) + "\n")
    for patient in ("100", "200"):
        for label in ("0", "1"):
            for n in range(max(2, per_class // 2)):
                name = f"{patient}_idx5_x{50 * n}_y0_class{label}.png"
                _noise_image(data / "idc" / patient / label / name, rng, 50)
    return data


def _noise_image(path: Path, rng: np.random.Generator, side: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(rng.integers(60, 200, 3) + rng.normal(0, 40, (side, side, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


# -- write path and start-up (ingest, embed_throughput) ------------------------------------------------


def replay_cost(store: Any, table: str, chunk_rows: int) -> dict[str, float]:
    """Seconds to write `table`'s rows again into empty tables of its schema, in `chunk_rows` chunks:
    plain Lance appends (what embedstore 0.1 did, and what duplicated rows under concurrency) against
    `embedstore.storage.keyed_writes.insert_missing` (the keyed path every writer uses); the difference is the
    cost of safety."""
    import lance

    from embedstore.storage.keyed_writes import create_table, insert_missing

    rows = store.catalog.read(table)
    schema = store.catalog.dataset(table).schema
    seconds = {}
    with scratch("write-path-") as tmp:
        for mode in ("append", "keyed"):
            root = tmp / mode
            root.mkdir()
            create_table(root, table, schema)
            path = root / f"{table}.lance"
            started = time.perf_counter()
            for start in range(0, rows.num_rows, chunk_rows):
                chunk = rows.slice(start, chunk_rows)
                if mode == "append":
                    lance.write_dataset(chunk, str(path), mode="append")
                else:
                    insert_missing(path, table, chunk)
            seconds[mode] = time.perf_counter() - started
            assert lance.dataset(str(path)).count_rows() == rows.num_rows
    return {"rows": rows.num_rows, "commits": -(-rows.num_rows // chunk_rows), **seconds}


def command_prefix() -> list[str]:
    """How to run the `embedstore` command: the installed script, else this Python with the module."""
    script = shutil.which("embedstore", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "cli.main"]


def startup_seconds(args: list[str], runs: int = 5, command: list[str] | None = None) -> float:
    """Median wall time of `embedstore ARGS` (or of `command`), after a warm-up run."""
    command = command or [*command_prefix(), *args]
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# -- generated embedding tables (embed_writer, scale_reads, store_versions) ----------------------------


def bench_provenance(dim: int = 256) -> Any:
    """The provenance of a generated `dim`-d float16 embedding table (bf16, as a GPU run would store it)."""
    from embedstore.storage.embedding_tables import Provenance

    return Provenance(
        backbone="bench",
        weights_sha256="",
        dim=dim,
        input_size=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        resize="bicubic",
        precision="bf16",
        store_dtype="float16",
    )


def embedding_rows(provenance: Any, start: int, count: int, rng: np.random.Generator, digits: int = 9) -> Any:
    """`count` rows of `provenance`'s embedding schema (view 0, random vectors), tile ids g<start...>."""
    import pyarrow as pa

    from embedstore.core.schema import ROW_KEY_SEPARATOR
    from embedstore.storage.embedding_tables import embedding_schema

    ids = [f"g{i:0{digits}d}" for i in range(start, start + count)]
    vectors = rng.standard_normal((count, provenance.dim), dtype=np.float32).astype(np.float16)
    return pa.table(
        [
            pa.array([f"{tile}{ROW_KEY_SEPARATOR}0" for tile in ids]),
            pa.array(ids),
            pa.array(np.zeros(count, np.int16)),
            pa.FixedSizeListArray.from_arrays(vectors.ravel(), provenance.dim),
        ],
        schema=embedding_schema(provenance),
    )
