"""Running a backbone fast: device choice, channels_last, autocast (bf16 / fp16), torch.compile."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .embedding_tables import PRECISIONS
from .errors import EmbedstoreError

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # keys: PRECISIONS
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """auto: CUDA when this machine has it, else CPU (decided at run time)."""
    if device not in DEVICES:
        raise EmbedstoreError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EmbedstoreError(
            "--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto"
        )
    return torch.device(device)


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(device: torch.device) -> int:
    """Decode worker processes: with a GPU, enough to feed it; on a CPU of up to 4 cores, none.

    On a small CPU machine the model's threads already use every core and decoding costs ~1-2 % of a
    forward pass, so decoding in the main thread between batches beats a worker that preempts the
    model's threads (measured on 2 cores: end-to-end 0.94-0.96 of forward-only inline, 0.88-0.92 with
    one worker; see benchmarks/embed_throughput.py). Bigger CPUs get one worker per 8 cores.
    """
    cpus = cpu_count()
    if device.type == "cuda":
        return max(1, min(8, cpus - 1))
    return 0 if cpus <= 4 else cpus // 8


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


class Forward:
    """uint8 pixels (B, 3, S, S) -> float32 CPU features (B, dim), in the configuration asked for.

    With compile, batches smaller than `batch_size` are padded so that one graph serves every batch.
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        precision: str,
        channels_last: bool,
        compile: bool,
        batch_size: int,
    ) -> None:
        if precision not in PRECISIONS:
            raise EmbedstoreError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.batch_size = batch_size
        model = model.eval().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.pad = compile
        self.model = torch.compile(model, dynamic=False) if compile else model
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        n = pixels.shape[0]
        if self.pad and n < self.batch_size:
            pixels = F.pad(pixels, (0, 0, 0, 0, 0, 0, 0, self.batch_size - n))
        pixels = pixels.to(self.device, non_blocking=True)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = self.model(pixels)
        return features[:n].float().cpu()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` intra-op threads inside the block (None: leave torch's setting alone)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
