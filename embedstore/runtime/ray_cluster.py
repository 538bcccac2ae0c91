"""Joining or starting Ray for `--engine ray`, shared by the engines that spread work over it.

Ray is an optional extra (`pip install "embedstore[ray]"`): nothing here imports it at module level,
so option classes can name ENGINES and check `--address` without it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import warnings
from collections.abc import Iterator
from typing import Any

from ..core.errors import EmbedstoreError
from ..core.validation import Name, OneOf, invalid, option
from .resources import cpu_count

ENGINES = ("local", "ray")
INSTALL_HINT = 'pip install "embedstore[ray]"'


def engine_option(what_runs_on_ray: str) -> Any:
    """The `engine` field of an options class ("local" | "ray")."""
    return option(
        "local",
        OneOf(ENGINES),
        help=f'Where the work runs: this process, or {what_runs_on_ray} (pip install "embedstore[ray]").',
    )


def address_option() -> Any:
    """The `address` field of an options class: the Ray cluster to join."""
    return option(
        None,
        Name(),
        optional=True,
        help="Ray cluster to join with --engine ray (e.g. ray://head:10001) [default: start Ray here].",
    )


def check_engine_address(engine: str, address: str | None) -> None:
    """--address names a Ray cluster, so it goes with --engine ray only."""
    if address is not None and engine != "ray":
        raise invalid("--address", address, "used with --engine ray only")


def require_ray() -> Any:
    """The ray module; EmbedstoreError naming the extra to install when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EmbedstoreError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None, cpus: int | None = None) -> Any:
    """Join the Ray cluster at `address`, or start Ray on this machine (None); reuses a running one."""
    ray = require_ray()
    if address is not None:
        check_reachable(address)  # Ray itself retries an unreachable address for minutes
    if ray.is_initialized():
        return ray
    settings: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        settings["num_cpus"] = cpus or cpu_count()
    try:
        with _quiet_start():
            ray.init(address=address, logging_level=logging.WARNING, **settings)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        where = address or "this machine"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EmbedstoreError(
            f"cannot reach a Ray cluster at {where}: {first}; check --address (ray://HOST:10001 or "
            "HOST:6379) or leave it out to run Ray locally"
        ) from None
    return ray


@contextlib.contextmanager
def _quiet_start() -> Iterator[None]:
    """Ray's start-up notices (local instance started, token authentication, Lance's at-fork warning
    as Ray forks) are not the user's business: errors only while starting."""
    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(max(level, logging.WARNING))


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """EmbedstoreError unless something listens at `address` (ray://HOST:PORT or HOST:PORT; "auto" is
    left to Ray)."""
    host_port = address.removeprefix("ray://").rsplit("/", 1)[0]
    if address == "auto" or ":" not in host_port:
        return
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as error:
        reason = (
            error.strerror if isinstance(error, OSError) and error.strerror else str(error) or "timed out"
        )
    raise EmbedstoreError(
        f"cannot reach a Ray cluster at {address}: {reason}; check --address (ray://HOST:10001 or "
        "HOST:6379, the head node's) or leave it out to run Ray on this machine"
    )
