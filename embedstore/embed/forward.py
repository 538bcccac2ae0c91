"""Running a backbone fast: channels_last, autocast (bf16 / fp16), torch.compile, padding for one graph,
and on CUDA a pinned staging buffer, so that each batch goes to the GPU by DMA without a pageable copy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import EmbedstoreError
from .options import PRECISIONS

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # keys: PRECISIONS


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
        self.staging: torch.Tensor | None = None  # pinned host memory, made at the first CUDA batch
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        n = pixels.shape[0]
        if self.pad and n < self.batch_size:
            pixels = F.pad(pixels, (0, 0, 0, 0, 0, 0, 0, self.batch_size - n))
        if self.device.type == "cuda" and pixels.device.type == "cpu":
            pixels = self._pinned(pixels)
        pixels = pixels.to(self.device, non_blocking=True)
        if self.channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = self.model(pixels)
        return features[:n].float().cpu()  # waits for the GPU: the staging buffer is free again

    def _pinned(self, pixels: torch.Tensor) -> torch.Tensor:
        """The batch copied into page-locked memory (one buffer, grown when a batch is larger)."""
        if (
            self.staging is None
            or self.staging.numel() < pixels.numel()
            or self.staging.dtype != pixels.dtype
        ):
            self.staging = torch.empty(pixels.numel(), dtype=pixels.dtype, pin_memory=True)
        flat = self.staging[: pixels.numel()]
        b, c, h, w = pixels.shape
        if pixels.is_contiguous(memory_format=torch.channels_last):  # the decoder's slots: keep the layout
            staged = flat.view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            staged = flat.view(b, c, h, w)
        staged.copy_(pixels)
        return staged
