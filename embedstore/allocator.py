"""glibc allocator settings for eager CPU inference (no-ops where the C library is not glibc).

Eager CPU inference allocates and frees activation tensors of tens to hundreds of MB every batch. By
default glibc serves each from a fresh mmap that the kernel zeroes page by page: on a 2-core VM that
was half of the forward pass's time. Keeping freed memory for reuse removes that cost, but a process
forked afterwards (a DataLoader worker) then shares that big heap copy-on-write, and the parent pays a
page copy for every page it writes again; trimming just before forking avoids it.
"""

from __future__ import annotations

import ctypes
import functools

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def reuse_freed_memory() -> bool:
    """Keep freed memory in the heap for reuse (process-wide, idempotent); False where not glibc.

    Resident memory then stays near its peak until the process ends or `trim()` is called.
    """
    libc = _libc()
    if libc is None:
        return False
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1


def trim() -> None:
    """Hand free heap memory back to the OS (before forking workers, or after a run)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
