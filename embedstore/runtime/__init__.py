"""L2, where work runs: devices, threads and memory (`resources`), the malloc arena cap (`allocator`) and the
Ray connection (`ray_cluster`). `from embedstore.runtime import resolve_device` keeps working."""

from .resources import (
    DEVICES,
    cpu_count,
    cpu_decode_workers,
    memory_available,
    resolve_device,
    reuse_freed_memory,
    torch_threads,
    trim,
)

__all__ = [
    "DEVICES",
    "cpu_count",
    "cpu_decode_workers",
    "memory_available",
    "resolve_device",
    "reuse_freed_memory",
    "torch_threads",
    "trim",
]
