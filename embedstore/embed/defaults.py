"""Batch size and decode workers that fit the device a run gets, for the options the user left out.

Measured on one H200 with 16 cores (issue #23): tf_efficientnet_lite0 end to end went from 3,857 tiles/s
with batch 64 and 8 decode workers to 8,793 with batch 256 and 15; ViT-L from 2,253 to 2,948 (0.98 of its
forward alone). One core decodes 840-1,070 tiles/s, so a GPU fed by CPU decoding gets every core but the
main thread's. When stored JPEG tiles are decoded on the GPU, the workers only pass bytes along (and
decode the PNG tiles and augmented views), so a couple suffice. On a CPU the model's threads use every
core: see `runtime.resources.cpu_decode_workers`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.resources import GPU_DECODE_WORKERS, cpu_count, cpu_decode_workers

GPU_BATCH = 256
SMALL_GPU_BATCH = 64  # GPUs with less memory than SMALL_GPU_BYTES (ViT-H at batch 256 needs ~10 GiB)
SMALL_GPU_BYTES = 20 * 2**30
CPU_BATCH = 64  # measured best or equal on 2 cores (benchmarks/embed_throughput.py)
DEVICE_DECODE_WORKERS = 2
MOSTLY_ON_DEVICE = 0.9  # share of rows decoded on the GPU above which DEVICE_DECODE_WORKERS suffice


@dataclass(frozen=True)
class Defaults:
    batch_size: int
    workers: int


def choose(device_type: str, cpus: int, gpu_bytes: int | None, device_decoded_share: float) -> Defaults:
    """The defaults for a device of `device_type` ("cuda" / "cpu"), `cpus` cores, `gpu_bytes` of GPU
    memory, when `device_decoded_share` of the rows are decoded on the device (0 without device decoding)."""
    if device_type != "cuda":
        return Defaults(CPU_BATCH, cpu_decode_workers(cpus))
    batch = GPU_BATCH if gpu_bytes is None or gpu_bytes >= SMALL_GPU_BYTES else SMALL_GPU_BATCH
    feeding = GPU_DECODE_WORKERS if device_decoded_share < MOSTLY_ON_DEVICE else DEVICE_DECODE_WORKERS
    return Defaults(batch, max(1, min(feeding, cpus - 1)))


def for_device(device_type: str, device_decoded_share: float) -> Defaults:
    """`choose` for this machine."""
    gpu_bytes = None
    if device_type == "cuda":
        import torch

        gpu_bytes = int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    return choose(device_type, cpu_count(), gpu_bytes, device_decoded_share)
