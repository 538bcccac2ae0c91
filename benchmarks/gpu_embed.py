"""GPU embedding: the product's own embed pipeline fed from stored JPEG tiles in memory, vs the bare model.

Tiles: the built-in PCam sample (embedstore/samples/pcam), each re-encoded at 256 px JPEG q90 (the ingest
default for slide tiles), held as a pyarrow table with the tiles table's columns, so nothing but this
checkout has to travel to the GPU node; Lance, LanceDB, polars, OpenSlide and FAISS are not needed.
Batch size and decode workers are the product's defaults for the device (`embed.defaults`) unless given.
Per model (random init) and precision, eager and (for --compiled models) torch.compile, tiles/s of:
  bare:        the model on uint8 pixels already on the device (autocast, channels_last);
  forward:     `Forward` on host batches in a page-locked slot, submitted one ahead of collection;
  end_to_end:  TileReader -> decode (on the device for JPEG with --decode auto on CUDA, else in decode
               workers) -> `Forward` -> features on the host, through `embed.pipeline.run_batches`;
  cpu_decode:  the same with --decode cpu, for the models in --cpu-decode-models;
with each as a ratio of bare, and `decode_agreement`: the vectors of one batch decoded on the device vs by
the CPU path (max abs difference, least cosine). The end-to-end run of each model records a timeline
(read / decode / wait / forward / device / collect lanes) drawn as a PNG beside the JSON.
Each model step runs under --step-seconds (a step past it is recorded as timed out) and the whole run
under --budget; the JSON is rewritten after every step. The writer (Lance) is not part of this run: its
cost at 10^5-10^7 rows is measured by benchmarks/embed_writer.py on a machine with the store installed.

    python benchmarks/gpu_embed.py --out results.json          # about 5 minutes on one H200
    python benchmarks/gpu_embed.py --smoke --out /tmp/s.json   # seconds on CPU: a tiny CNN, 8 tiles
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np
import pyarrow as pa
import torch

from embedstore.backbones import get_backbone
from embedstore.embed import defaults
from embedstore.embed.forward import Forward, autocast
from embedstore.embed.input import (
    ArrowTiles,
    BatchSlots,
    DecodeTiles,
    Payload,
    TileReader,
    device_jpeg,
    make_loader,
    start,
    stop,
)
from embedstore.embed.pipeline import run_batches
from embedstore.embed.timeline import Timeline
from embedstore.sources.tile_pixels import TILE_COLUMNS

SAMPLES = harness.ROOT / "embedstore" / "samples" / "pcam"
RESULTS = harness.RESULTS / "gpu_embed.json"
MODELS = (
    "tf_efficientnet_lite0",
    "resnet50",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_large_patch16_224",
    "vit_huge_patch14_224",
)
COMPILED = ("tf_efficientnet_lite0", "vit_large_patch16_224")
CPU_DECODE = ("tf_efficientnet_lite0", "vit_large_patch16_224")
SMOKE = {
    "models": harness.SMOKE_BACKBONE.removesuffix(".random"),
    "compiled": "",
    "cpu_decode_models": harness.SMOKE_BACKBONE.removesuffix(".random"),
    "tiles": 8,
    "batch_size": 4,
    "workers": 0,
    "precisions": "fp32",
    "device": "cpu",
    "decode": "device",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated timm architectures")
    parser.add_argument("--compiled", default=",".join(COMPILED), help="models also run with torch.compile")
    parser.add_argument(
        "--precisions", default="auto", help="comma-separated fp32,bf16,fp16; auto: bf16 on CUDA"
    )
    parser.add_argument(
        "--cpu-decode-models",
        default=",".join(CPU_DECODE),
        help="models also run end to end with --decode cpu",
    )
    parser.add_argument("--tiles", type=int, default=3840, help="tiles per measurement")
    parser.add_argument("--batch-size", type=int, default=None, help="[default: embed's for the device]")
    parser.add_argument("--workers", type=int, default=None, help="[default: embed's for the device]")
    parser.add_argument("--decode", default="auto", help="auto (on the device on CUDA), device or cpu")
    parser.add_argument("--step-seconds", type=float, default=90.0, help="time limit of one model step")
    parser.add_argument("--budget", type=float, default=280.0, help="seconds for the whole run")
    parser.add_argument("--device", default="auto", help="auto (cuda where there is one), cuda or cpu")
    parser.add_argument(
        "--isolate",
        choices=("auto", "yes", "no"),
        default="auto",
        help="run each step in its own process, killed past --step-seconds even when hung in CUDA or C "
        "code (where the in-process time limit cannot interrupt it) [auto: on CUDA]",
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)  # MODEL:PRECISION:MODE, run alone (--isolate)
    parser.add_argument("--step-out", type=Path, help=argparse.SUPPRESS)  # where --step writes its row
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.precisions == "auto":
        args.precisions = "bf16" if args.device == "cuda" else "fp32"
    return args


def stored_tiles(n: int, side: int = 256, quality: int = 90) -> pa.Table:
    """n tiles (the PCam sample, cycled) as JPEG bytes of side x side at `quality`, in the tiles columns."""
    from PIL import Image

    jpegs = []
    for path in sorted(SAMPLES.glob("*/*.jpg")):
        buffer = io.BytesIO()
        image = Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
        image.save(buffer, "JPEG", quality=quality)
        jpegs.append(buffer.getvalue())
    pixels = [jpegs[i % len(jpegs)] for i in range(n)]
    zeros = [0] * n
    return pa.table(
        {
            "tile_id": [f"t{i:06d}" for i in range(n)],
            "pixels": pixels,
            "source_id": ["pcam"] * n,
            "x": zeros,
            "y": zeros,
            "level": zeros,
            "size0": [side] * n,
            "width": [side] * n,
            "height": [side] * n,
        }
    ).select(TILE_COLUMNS)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in this (main) thread after `seconds`."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"step ran past {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(run: Callable[[], int], device: torch.device, warmup: bool = True) -> float:
    """tiles/s of `run` (which returns the tiles it did), after one untimed call when `warmup`."""
    if warmup:
        run()
        synchronize(device)
    started = time.perf_counter()
    tiles = run()
    synchronize(device)
    return tiles / (time.perf_counter() - started)


def host_batch(
    table: pa.Table, size: int, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, BatchSlots]:
    """One batch decoded and resized by the product's CPU decoder, as `Forward` gets it: a view of a slot
    of the decode ring, page-locked on CUDA as `embed` pins it (unpin the slots when done)."""
    slots = BatchSlots(0, 1, batch_size, size)
    slots.pin(device)
    rows = table.slice(0, batch_size).to_pylist()
    batch = DecodeTiles(slots, size, "bicubic", (), {})[Payload(rows, [(i, 0) for i in range(len(rows))])]
    return slots.pixels(batch), slots


def fitting(args: argparse.Namespace, device: torch.device, decode: str) -> tuple[int, int]:
    """(batch size, workers): the arguments, or embed's defaults for this device and decoding."""
    on_device = 1.0 if decode == "device" or (decode == "auto" and device.type == "cuda") else 0.0
    chosen = defaults.for_device(device.type, on_device)
    batch_size = chosen.batch_size if args.batch_size is None else args.batch_size
    return batch_size, chosen.workers if args.workers is None else args.workers


def pipelined(forward: Forward, pixels: torch.Tensor, batches: int) -> int:
    """`batches` forward passes of `pixels`, each submitted before the previous one is collected."""
    pending = None
    for _ in range(batches):
        submitted = forward.submit(pixels)
        if pending is not None:
            pending.result()
        pending = submitted
    if pending is not None:
        pending.result()
    return batches * pixels.shape[0]


def end_to_end(
    forward: Forward,
    size: int,
    table: pa.Table,
    tiles: int,
    decode: str,
    workers: int,
    timeline: Timeline | None = None,
) -> int:
    """Tiles read, decoded and embedded by the product's pipeline; returns the tiles done."""
    device, batch_size = forward.device, forward.batch_size
    missing = pa.table({"pos": np.arange(tiles) % table.num_rows, "view": np.zeros(tiles, np.int16)})
    slots = BatchSlots(workers, 2, batch_size, size)
    slots.pin(device)
    decoder = DecodeTiles(slots, size, "bicubic", (), {}, device_jpeg(decode, device, size, "bicubic"))
    reader = TileReader(ArrowTiles(table), missing, batch_size, slots.count, timeline)
    batches = start(make_loader(reader, decoder, workers, 2, device.type == "cpu"))
    try:
        return run_batches(batches, decoder, forward, lambda batch, vectors: None, timeline)
    finally:
        reader.close()
        stop(batches)
        slots.unpin()


def decode_agreement(forward: Forward, size: int, table: pa.Table) -> dict[str, float]:
    """One batch's vectors with stored JPEGs decoded on the device vs by the CPU decoder."""
    device = forward.device
    rows = table.slice(0, forward.batch_size).to_pylist()
    payload = Payload(rows, [(i, 0) for i in range(len(rows))])
    cpu_decoder = DecodeTiles(BatchSlots(0, 1, len(rows), size), size, "bicubic", (), {})
    cpu = forward(cpu_decoder.pixels(cpu_decoder[payload]))
    jpeg = device_jpeg("device", device, size, "bicubic")
    on_device = forward(jpeg([row["pixels"] for row in rows]))  # type: ignore[misc]
    cosine = torch.nn.functional.cosine_similarity(cpu, on_device, dim=1)
    return {
        "max_abs_diff": float((cpu - on_device).abs().max()),
        "max_abs_value": float(cpu.abs().max()),
        "least_cosine": float(cosine.min()),
    }


def measure(
    model_name: str, precision: str, compiled: bool, table: pa.Table, args: argparse.Namespace
) -> dict[str, Any]:
    """bare, forward and end-to-end tiles/s of one model configuration."""
    device = torch.device(args.device)
    backbone = get_backbone(f"{model_name}.random")
    size = backbone.spec.input_size
    batch_size, workers = fitting(args, device, args.decode)
    started = time.perf_counter()
    forward = Forward(backbone.build(), device, precision, True, compiled, batch_size)
    pixels, host_slots = host_batch(table, size, batch_size, device)
    batches = max(2, -(-args.tiles // batch_size))
    on_device = pixels.to(device).contiguous(memory_format=torch.channels_last)

    def bare() -> int:
        with torch.inference_mode(), autocast(device, precision):
            for _ in range(batches):
                forward.model(on_device)
        return batches * batch_size

    found: dict[str, Any] = {"batch_size": batch_size, "workers": workers, "decode": args.decode}
    found["bare"] = rate(bare, device)
    found["setup_seconds"] = time.perf_counter() - started
    found["forward"] = rate(lambda: pipelined(forward, pixels, batches), device)
    found["forward_staged_batches"] = forward.staging.batches  # > 0: the slot was not page-locked
    found["end_to_end"] = rate(
        lambda: end_to_end(forward, size, table, args.tiles, args.decode, workers), device
    )
    timeline = Timeline()
    timed = Forward(backbone.build(), device, precision, True, False, batch_size, timeline)
    end_to_end(timed, size, table, min(args.tiles, 4 * batch_size), args.decode, workers)  # warm-up
    timeline.spans.clear()
    end_to_end(timed, size, table, args.tiles, args.decode, workers, timeline)
    stem = f"{args.out.stem}_timeline_{model_name}_{precision}"
    found["timeline"] = {"png": str(timeline.save(args.out.parent / stem)[1]), "busy": timeline.summary()}
    if model_name in set(filter(None, args.cpu_decode_models.split(","))) and not compiled:
        _, cpu_workers = fitting(args, device, "cpu")
        found["cpu_decode_workers"] = cpu_workers
        found["cpu_decode"] = rate(
            lambda: end_to_end(forward, size, table, args.tiles, "cpu", cpu_workers), device, warmup=False
        )
        found["cpu_decode_vs_bare"] = found["cpu_decode"] / found["bare"]
    found["forward_vs_bare"] = found["forward"] / found["bare"]
    found["end_to_end_vs_bare"] = found["end_to_end"] / found["bare"]
    found["decode_agreement"] = decode_agreement(forward, size, table)
    found["dim"] = backbone.spec.dim
    host_slots.unpin()
    return found


def run_steps(args: argparse.Namespace, table: pa.Table, result: dict[str, Any]) -> None:
    """Every (model, precision, mode) step, each under its time limit, the JSON rewritten after each."""
    deadline = time.monotonic() + args.budget
    compiled = set(filter(None, args.compiled.split(",")))
    for model_name in filter(None, args.models.split(",")):
        for precision in args.precisions.split(","):
            for mode in ("eager", "compiled") if model_name in compiled else ("eager",):
                row: dict[str, Any] = {"model": model_name, "precision": precision, "mode": mode}
                left = deadline - time.monotonic()
                if left < 5:
                    row["status"] = "skipped: out of --budget"
                else:
                    harness.say(f"{model_name} {precision} {mode}")
                    seconds = min(args.step_seconds, left)
                    if args.isolate == "yes" or (args.isolate == "auto" and args.device == "cuda"):
                        row.update(run_isolated(f"{model_name}:{precision}:{mode}", seconds + 30, args))
                    else:
                        row.update(run_step(model_name, precision, mode, seconds, table, args))
                result["runs"].append(row)
                harness.write_json(args.out, result)


def run_step(
    model_name: str, precision: str, mode: str, seconds: float, table: pa.Table, args: argparse.Namespace
) -> dict[str, Any]:
    """One step's measurements and status, in this process, under `seconds`."""
    row: dict[str, Any] = {}
    try:
        with time_limit(seconds):
            row.update(measure(model_name, precision, mode == "compiled", table, args))
        row["status"] = "ok"
    except TimeoutError as error:
        row["status"] = f"timed out: {error}"
    except Exception as error:  # one model failing must not lose the others' numbers
        row["status"] = f"failed: {type(error).__name__}: {error}"
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return row


def run_isolated(step: str, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    """One step in a child process (and its decode workers, one process group), killed past `seconds`."""
    with tempfile.TemporaryDirectory(prefix="gpu-embed-") as tmp:
        out = Path(tmp) / "row.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--step-out", str(out)]
        for flag in (
            "tiles",
            "batch_size",
            "workers",
            "decode",
            "device",
            "cpu_decode_models",
            "step_seconds",
        ):
            value = getattr(args, flag)
            if value is not None:
                command += [f"--{flag.replace('_', '-')}", str(value)]
        command += ["--out", str(args.out), "--isolate", "no"]
        child = subprocess.Popen(command, start_new_session=True)
        try:
            child.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return {"status": f"timed out: killed after {seconds:.0f} s"}
        if not out.is_file():
            return {
                "status": f"failed: the step's process ended with status {child.returncode} and no result"
            }
        return json.loads(out.read_text())


def print_table(runs: list[dict[str, Any]]) -> None:
    header = (
        f"{'model':<24} {'prec':<5} {'mode':<8} {'batch':>5} {'bare':>9} {'forward':>14} {'end to end':>14}"
    )
    print(f"\n{header} {'cpu decode':>14}  decode diff / cos  status")
    for row in runs:
        head = f"{row['model']:<24} {row['precision']:<5} {row['mode']:<8}"
        if row.get("status") != "ok":
            print(f"{head} {'':>5} {'':>9} {'':>14} {'':>14} {'':>14}  {'':>17}  {row['status']}")
            continue
        fwd = f"{row['forward']:,.0f} ({row['forward_vs_bare']:.2f})"
        e2e = f"{row['end_to_end']:,.0f} ({row['end_to_end_vs_bare']:.2f})"
        cpu = f"{row['cpu_decode']:,.0f} ({row['cpu_decode_vs_bare']:.2f})" if "cpu_decode" in row else ""
        agree = row["decode_agreement"]
        diff = f"{agree['max_abs_diff']:.1e} / {agree['least_cosine']:.4f}"
        rates = f"{row['bare']:>9,.0f} {fwd:>14} {e2e:>14} {cpu:>14}"
        print(f"{head} {row['batch_size']:>5} {rates}  {diff:>17}  ok")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": harness.machine(gpu=gpu, torch=torch.__version__),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "tiles": {"count": args.tiles, "stored_as": "256 px JPEG q90 (PCam sample, re-encoded)"},
        "runs": [],
    }
    started = time.perf_counter()
    table = stored_tiles(min(args.tiles, 960))
    if args.step is not None:  # a child of --isolate: one step, its row to --step-out
        model_name, precision, mode = args.step.split(":")
        row = run_step(model_name, precision, mode, args.step_seconds, table, args)
        harness.write_json(args.step_out, row)
        return 0
    run_steps(args, table, result)
    result["seconds"] = time.perf_counter() - started
    harness.write_json(args.out, result)
    print_table(result["runs"])
    harness.say(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
