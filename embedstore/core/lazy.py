"""Names a package exports but imports only on first use, so that importing the package stays fast.

    __getattr__ = lazy_exports(__name__, {"Store": ".store", "open": ".store"})

`embedstore --help` and `import heads` never pay for torch, FAISS or polars this way; a type checker sees
the same names through the package's `if TYPE_CHECKING:` imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, modules: dict[str, str], otherwise: Callable[[str], Any] | None = None
) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name in `modules` (name -> module, relative to `package`)
    is imported from its module when first used; any other name goes to `otherwise` (e.g. old names that
    warn), or is an AttributeError."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(importlib.import_module(modules[name], package), name)
        if otherwise is not None:
            return otherwise(name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
