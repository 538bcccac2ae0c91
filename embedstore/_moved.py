"""Old import paths of moved modules, kept for one release: a module `__getattr__` that warns and forwards."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def forward(old: str, new: str, names: set[str] | None = None) -> Callable[..., Any]:
    """A module `__getattr__` for `old` whose contents (or only `names`) moved to the module `new`: each use
    of a moved name warns (DeprecationWarning, naming the new place) and returns the new module's
    object (`stacklevel` 3 when called from another module `__getattr__`)."""

    def __getattr__(name: str, stacklevel: int = 2) -> Any:
        target = importlib.import_module(new)
        if (names is None or name in names) and not name.startswith("__") and hasattr(target, name):
            warnings.warn(
                f"{old}.{name} moved to {new}.{name}; import it from there ({old} keeps it for one release)",
                DeprecationWarning,
                stacklevel=stacklevel,
            )
            return getattr(target, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__
