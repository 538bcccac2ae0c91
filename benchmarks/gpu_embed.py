"""GPU embedding: the product's own embed pipeline fed from stored JPEG tiles in memory, vs the bare model.

Tiles: the built-in PCam sample (embedstore/samples/pcam), each re-encoded at 256 px JPEG q90 (the ingest
default for slide tiles), held as a pyarrow table with the tiles table's columns, so nothing but this
checkout has to travel to the GPU node; Lance, LanceDB, polars, OpenSlide and FAISS are not needed.
Per model (random init) and precision, eager and (for --compiled models) torch.compile, tiles/s of:
  bare:       the model on uint8 pixels already on the device (autocast, channels_last);
  forward:    `Forward` (the product's staging, transfer, autocast and copy back) on host batches;
  end_to_end: TileReader -> DecodeTiles in --workers decode workers (`make_loader`) -> `Forward`;
with forward / bare and end_to_end / bare. Each model step runs under --step-seconds (a step past it is
recorded as timed out) and the whole run under --budget; the JSON is rewritten after every step.

    python benchmarks/gpu_embed.py --out results.json          # about 5 minutes on one H200
    python benchmarks/gpu_embed.py --smoke --out /tmp/s.json   # seconds on CPU: a tiny CNN, 8 tiles
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np
import pyarrow as pa
import torch

from embedstore.backbones import get_backbone
from embedstore.embed.forward import Forward, autocast
from embedstore.embed.input import BatchSlots, DecodeTiles, TileReader, make_loader, start, stop
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
SMOKE = {
    "models": harness.SMOKE_BACKBONE.removesuffix(".random"),
    "compiled": "",
    "tiles": 8,
    "batch_size": 4,
    "workers": 0,
    "precisions": "fp32",
    "device": "cpu",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated timm architectures")
    parser.add_argument("--compiled", default=",".join(COMPILED), help="models also run with torch.compile")
    parser.add_argument(
        "--precisions", default="auto", help="comma-separated fp32,bf16,fp16; auto: bf16 on CUDA"
    )
    parser.add_argument("--tiles", type=int, default=3840, help="tiles per measurement")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (64 is the embed default)")
    parser.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--step-seconds", type=float, default=90.0, help="time limit of one model step")
    parser.add_argument("--budget", type=float, default=280.0, help="seconds for the whole run")
    parser.add_argument("--device", default="auto", help="auto (cuda where there is one), cuda or cpu")
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


class MemoryTiles:
    """The part of a Lance dataset TileReader uses (`take`), over a pyarrow table in memory."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def take(self, index: np.ndarray, columns: list[str]) -> pa.Table:
        return self.table.select(columns).take(pa.array(index))


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


def host_batch(table: pa.Table, size: int, batch_size: int) -> torch.Tensor:
    """One batch decoded and resized by the product's decoder, as the slot view `Forward` gets."""
    slots = BatchSlots(0, 1, batch_size, size)
    rows = table.slice(0, batch_size).to_pylist()
    from embedstore.embed.input import Payload

    batch = DecodeTiles(slots, size, "bicubic", (), {})[Payload(rows, [(i, 0) for i in range(len(rows))])]
    return slots.pixels(batch)


def measure(
    model_name: str, precision: str, compiled: bool, table: pa.Table, args: argparse.Namespace
) -> dict[str, Any]:
    """bare, forward and end-to-end tiles/s of one model configuration."""
    device = torch.device(args.device)
    backbone = get_backbone(f"{model_name}.random")
    size, batch_size = backbone.spec.input_size, args.batch_size
    started = time.perf_counter()
    forward = Forward(backbone.build(), device, precision, True, compiled, batch_size)
    pixels = host_batch(table, size, batch_size)
    batches = max(2, -(-args.tiles // batch_size))
    on_device = pixels.to(device).contiguous(memory_format=torch.channels_last)

    def bare() -> int:
        with torch.inference_mode(), autocast(device, precision):
            for _ in range(batches):
                forward.model(on_device)
        return batches * batch_size

    def staged() -> int:
        for _ in range(batches):
            forward(pixels)
        return batches * batch_size

    missing = pa.table(
        {"pos": np.arange(args.tiles) % table.num_rows, "view": np.zeros(args.tiles, np.int16)}
    )

    def end_to_end() -> int:
        slots = BatchSlots(args.workers, 2, batch_size, size)
        decoder = DecodeTiles(slots, size, "bicubic", (), {})
        reader = TileReader(MemoryTiles(table), missing, batch_size, slots.count)
        batches_in = start(make_loader(reader, decoder, args.workers, 2, device.type == "cpu"))
        done = 0
        try:
            for batch in batches_in:
                if batch.error is not None:
                    raise RuntimeError(batch.error)
                done += forward(slots.pixels(batch)).shape[0]
        finally:
            reader.close()
            stop(batches_in)
        return done

    found: dict[str, Any] = {"bare": rate(bare, device)}
    found["setup_seconds"] = time.perf_counter() - started
    found["forward"] = rate(staged, device)
    found["end_to_end"] = rate(end_to_end, device)  # each call starts its own decode workers
    found["forward_vs_bare"] = found["forward"] / found["bare"]
    found["end_to_end_vs_bare"] = found["end_to_end"] / found["bare"]
    found["dim"] = backbone.spec.dim
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
                    try:
                        with time_limit(min(args.step_seconds, left)):
                            row.update(measure(model_name, precision, mode == "compiled", table, args))
                        row["status"] = "ok"
                    except TimeoutError as error:
                        row["status"] = f"timed out: {error}"
                    except Exception as error:  # one model failing must not lose the others' numbers
                        row["status"] = f"failed: {type(error).__name__}: {error}"
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
                result["runs"].append(row)
                harness.write_json(args.out, result)


def print_table(runs: list[dict[str, Any]]) -> None:
    print(f"\n{'model':<24} {'prec':<5} {'mode':<8} {'bare':>9} {'forward':>14} {'end to end':>14}  status")
    for row in runs:
        if row.get("status") != "ok":
            print(
                f"{row['model']:<24} {row['precision']:<5} {row['mode']:<8} {'':>9} {'':>14} {'':>14}  "
                f"{row['status']}"
            )
            continue
        fwd = f"{row['forward']:,.0f} ({row['forward_vs_bare']:.2f})"
        e2e = f"{row['end_to_end']:,.0f} ({row['end_to_end_vs_bare']:.2f})"
        print(
            f"{row['model']:<24} {row['precision']:<5} {row['mode']:<8} {row['bare']:>9,.0f} {fwd:>14} "
            f"{e2e:>14}  ok"
        )


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
    run_steps(args, table, result)
    result["seconds"] = time.perf_counter() - started
    harness.write_json(args.out, result)
    print_table(result["runs"])
    harness.say(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
