"""Named points inside writers where code can run: fault injection for tests, without monkeypatching.

Points (each fires with keyword arguments describing the moment):
    ingest.read_tile      before a tile's pixels are read (source=path, tile_id)
    write.before_commit   a commit to `table` is prepared, nothing of it is durable yet (table, rows;
                          rows=0 for creating a table or deleting)
    write.claimed         a keyed write holds the claims of its keys, its rows are not written yet
                          (table, rows: how many keys it holds)
    write.after_commit    that commit is durable (table, rows)

In-process, `inject(point, function)` runs the function at that point (raise from it to simulate a
failure). Across processes (a CLI run under test), the environment variable
`EMBEDSTORE_FAULT=point:action:n` acts at the n-th firing of the point: action `kill` sends SIGKILL to
the process itself (a crash, nothing cleaned up), `raise` raises InjectedFault. Unset, they cost nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

POINTS = ("ingest.read_tile", "write.before_commit", "write.claimed", "write.after_commit")
ENV_VARIABLE = "EMBEDSTORE_FAULT"

_injected: dict[str, list[Callable[..., Any]]] = {}
_counts: dict[str, int] = {}
_lock = threading.Lock()


class InjectedFault(RuntimeError):
    """Raised by an `EMBEDSTORE_FAULT=point:raise:n` fault."""


@contextlib.contextmanager
def inject(point: str, function: Callable[..., Any]) -> Iterator[None]:
    """Run `function(**details)` whenever `point` fires inside the block."""
    if point not in POINTS:
        raise ValueError(f"unknown hook point {point!r}; points: {', '.join(POINTS)}")
    _injected.setdefault(point, []).append(function)
    try:
        yield
    finally:
        _injected[point].remove(function)


def fire(point: str, **details: Any) -> None:
    """Called by the writers at each point."""
    for function in list(_injected.get(point, ())):
        function(**details)
    spec = os.environ.get(ENV_VARIABLE)
    if spec:
        _env_fault(spec, point)


def _env_fault(spec: str, point: str) -> None:
    wanted, _, rest = spec.partition(":")
    action, _, count = rest.partition(":")
    if wanted != point:
        return
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        reached = _counts[point] == int(count or 1)
    if not reached:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"fault injected at {point} ({ENV_VARIABLE}={spec})")
