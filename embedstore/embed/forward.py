"""Running a backbone fast: channels_last, autocast (bf16 / fp16), torch.compile, padding for one graph.

On CUDA nothing waits needlessly: pixels already in page-locked memory (the decode ring, pinned by
`BatchSlots.pin`) go to the GPU by DMA without a copy (others are staged through two pinned buffers);
`submit` returns at once and the features come back into pinned host buffers asynchronously, so the
caller can hand the next batch to the GPU before it collects this one's features (`PendingFeatures`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import EmbedstoreError
from .options import PRECISIONS
from .timeline import Timeline

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # keys: PRECISIONS
RING = 2  # pinned staging and output buffers: one batch in flight while the next is submitted


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


class PendingFeatures:
    """One submitted batch's features, on their way back to the host; `result` waits for them."""

    def __init__(
        self,
        features: torch.Tensor,
        rows: int,
        done: torch.cuda.Event | None = None,
        began: torch.cuda.Event | None = None,
    ) -> None:
        self._features, self.rows, self.done, self.began = features, rows, done, began
        self._value: torch.Tensor | None = None

    def result(self) -> torch.Tensor:
        """float32 CPU features (rows, dim), owned by the caller."""
        if self._value is None:
            if self.done is not None:
                self.done.synchronize()
            self._value = self._features[: self.rows].clone()  # the output buffer is reused
        return self._value


class Forward:
    """uint8 pixels (B, 3, S, S) -> float32 CPU features (B, dim), in the configuration asked for.

    `forward(pixels)` returns the features; `forward.submit(pixels)` returns a `PendingFeatures` at once.
    At most RING batches may be pending: submitting one more first collects the oldest.
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
        timeline: Timeline | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise EmbedstoreError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.batch_size = batch_size
        self.timeline = timeline
        model = model.eval().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.pad = compile
        self.model = torch.compile(model, dynamic=False) if compile else model
        self.staging = StagingRing(pin=device.type == "cuda")
        self._outputs: list[tuple[torch.Tensor, PendingFeatures | None]] = []
        self._submitted = 0
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            self._origin = torch.cuda.Event(enable_timing=True)
            self._origin.record()
            torch.cuda.synchronize(device)
            self._origin_time = time.perf_counter()

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.submit(pixels).result()

    def submit(self, pixels: torch.Tensor) -> PendingFeatures:
        """Start the batch's forward pass; its features follow asynchronously on CUDA."""
        n = pixels.shape[0]
        if self.pad and n < self.batch_size:
            pixels = F.pad(pixels, (0, 0, 0, 0, 0, 0, 0, self.batch_size - n))
        cuda = self.device.type == "cuda"
        began = torch.cuda.Event(enable_timing=True) if cuda and self.timeline is not None else None
        if began is not None:
            began.record()
        staged_in: int | None = None
        if cuda and pixels.device.type == "cpu" and not pixels.is_pinned():
            pixels, staged_in = self.staging.stage(pixels)
        pixels = pixels.to(self.device, non_blocking=True)
        if staged_in is not None:
            self.staging.sent(staged_in)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = self.model(pixels)[:n].float()
        self._submitted += 1
        return self._send_back(features, n, began)

    def device_spans(self, pending: PendingFeatures) -> tuple[float, float] | None:
        """(start, end) perf_counter seconds the GPU spent on a collected batch (with a timeline only)."""
        if pending.began is None or pending.done is None:
            return None
        start = self._origin.elapsed_time(pending.began) / 1000
        end = self._origin.elapsed_time(pending.done) / 1000
        return self._origin_time + start, self._origin_time + end

    def _send_back(self, features: torch.Tensor, n: int, began: torch.cuda.Event | None) -> PendingFeatures:
        """Copy the features into the next output buffer (pinned on CUDA) without waiting for them.
        On the CPU the same ring is used (the copy is synchronous there): tested without a GPU."""
        cuda = self.device.type == "cuda"
        index = (self._submitted - 1) % RING
        while len(self._outputs) <= index:
            self._outputs.append((torch.empty(0), None))
        buffer, previous = self._outputs[index]
        if previous is not None:
            previous.result()  # its owner has not collected it yet: keep its copy before reuse
        if buffer.numel() < features.numel():
            buffer = torch.empty(features.numel(), dtype=torch.float32, pin_memory=cuda)
        host = buffer[: features.numel()].view(features.shape)
        host.copy_(features, non_blocking=cuda)
        done = None
        if cuda:
            done = torch.cuda.Event(enable_timing=began is not None)
            done.record()
        pending = PendingFeatures(host, n, done, began)
        self._outputs[index] = (buffer, pending)
        return pending


class StagingRing:
    """RING page-locked buffers that host batches not page-locked already are copied into before their
    transfer (a DMA needs page-locked memory); a buffer is refilled once the GPU has read it.
    `pin=False` makes plain buffers and no events: the copy logic, runnable without CUDA."""

    def __init__(self, pin: bool = True) -> None:
        self.pin = pin
        self.batches = 0  # batches staged so far
        self._buffers: list[torch.Tensor] = []
        self._read: list[torch.cuda.Event | None] = []

    def stage(self, pixels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The batch copied into the next buffer (its layout kept), and that buffer's index."""
        index = self.batches % RING
        self.batches += 1
        if len(self._buffers) <= index:
            self._buffers.append(torch.empty(0, dtype=torch.uint8))
            self._read.append(torch.cuda.Event() if self.pin else None)
        read = self._read[index]
        if read is not None:
            read.synchronize()  # the GPU has read the batch staged here before (no-op when never sent)
        buffer = self._buffers[index]
        if buffer.numel() < pixels.numel() or buffer.dtype != pixels.dtype:
            buffer = torch.empty(pixels.numel(), dtype=pixels.dtype, pin_memory=self.pin)
            self._buffers[index] = buffer
        flat = buffer[: pixels.numel()]
        b, c, h, w = pixels.shape
        if pixels.is_contiguous(memory_format=torch.channels_last):  # the decoder's slots: keep the layout
            staged = flat.view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            staged = flat.view(b, c, h, w)
        staged.copy_(pixels)
        return staged, index

    def sent(self, index: int) -> None:
        """Mark buffer `index` as handed to the GPU: refilling it waits until the transfer has run."""
        read = self._read[index]
        if read is not None:
            read.record()
