"""Where and how models run: the device (chosen at run time), CPU count, torch threads, and glibc's allocator.

Allocator: eager CPU inference allocates and frees activation tensors of tens to hundreds of MB every
batch. By default glibc serves each from a fresh mmap that the kernel zeroes page by page: on a 2-core
VM that was half of the forward pass's time. Keeping freed memory for reuse removes that cost, but a
process forked afterwards (a DataLoader worker) then shares that big heap copy-on-write, and the parent
pays a page copy for every page it writes again; trimming just before forking avoids it. These are
no-ops where the C library is not glibc.

torch is imported inside the functions, so option classes can name DEVICES without loading it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import EmbedstoreError
from .allocator import glibc, usable_cpus

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")
GPU_DECODE_WORKERS = 16  # one H200 with 16 cores decoded 11,160 tiles/s with 15 (issue #23)


def resolve_device(device: str) -> torch.device:
    """auto: CUDA when this machine has it, else CPU (decided at run time)."""
    import torch

    if device not in DEVICES:
        raise EmbedstoreError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EmbedstoreError(
            "--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto"
        )
    return torch.device(device)


def memory_available(device: torch.device | str = "cpu") -> int | None:
    """Bytes still free to allocate on `device`, None when unknown: for a CUDA device the free memory it
    reports; for the CPU what the kernel counts as available (MemAvailable: free plus reclaimable
    caches), capped by the container's memory limit (cgroup v2) when there is one."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found = [
        _kib_from("/proc/meminfo", "MemAvailable:"),
        _cgroup_room("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ]
    known = [value for value in found if value is not None]
    if not known and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            known.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(known) if known else None


def _kib_from(path: str, key: str) -> int | None:
    """A `key: N kB` line of a /proc file, in bytes."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return None


def _cgroup_room(limit_path: str, usage_path: str) -> int | None:
    """Bytes below this container's memory limit, None without a limit."""
    with contextlib.suppress(OSError, ValueError):
        limit = Path(limit_path).read_text().strip()
        if limit != "max":
            return max(0, int(limit) - int(Path(usage_path).read_text()))
    return None


def cpu_count() -> int:
    """CPUs this process may run on."""
    return usable_cpus()


def cpu_decode_workers(cpus: int) -> int:
    """Decode workers beside a model that runs on `cpus` cores: none up to 4 cores, one per 8 above.

    On a small CPU machine the model's threads already use every core and decoding costs ~1-2 % of a
    forward pass, so decoding in the main thread between batches beats a worker that preempts the
    model's threads (measured on 2 cores: end-to-end 0.94-0.96 of forward-only inline, 0.88-0.92 with
    one worker; see benchmarks/embed_throughput.py).
    """
    return 0 if cpus <= 4 else cpus // 8


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` intra-op threads inside the block (None: leave torch's setting alone)."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters


@functools.cache
def reuse_freed_memory() -> bool:
    """Keep freed memory in the heap for reuse (process-wide, idempotent); False where not glibc.

    Resident memory then stays near its peak until the process ends or `trim()` is called.
    """
    libc = glibc()
    if libc is None:
        return False
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1


def trim() -> None:
    """Hand free heap memory back to the OS (before forking workers, or after a run)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
