"""Old import paths kept for one release, each use warning with the new place.

- `forward(old, new)`: a module `__getattr__` for a module some of whose names moved elsewhere.
- `alias_modules({old: new})`: whole modules that moved (issue #21's folders by layer): `import old` gives
  the module `new` itself (one object, so a patch through either name is seen by both), with a
  DeprecationWarning naming the new path. `embedstore` registers its table (`MOVED_MODULES`) on import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

# embedstore's modules that moved into layer packages in 0.x (issue #21); old path -> new path
MOVED_MODULES = {
    "embedstore.errors": "embedstore.core.errors",
    "embedstore.schema": "embedstore.core.schema",
    "embedstore.ids": "embedstore.core.ids",
    "embedstore.validation": "embedstore.core.validation",
    "embedstore.tabular": "embedstore.core.tabular",
    "embedstore.hooks": "embedstore.core.hooks",
    "embedstore.location": "embedstore.core.location",
    "embedstore.reports": "embedstore.core.reports",
    "embedstore.catalog": "embedstore.storage.catalog",
    "embedstore.versions": "embedstore.storage.versions",
    "embedstore.writes": "embedstore.storage.keyed_writes",
    "embedstore.damage": "embedstore.storage.damage",
    "embedstore.embedding_tables": "embedstore.storage.embedding_tables",
    "embedstore.saved": "embedstore.storage.saved",
    "embedstore.ray_cluster": "embedstore.runtime.ray_cluster",
    "embedstore.check": "embedstore.maintenance.check",
    "embedstore.info": "embedstore.maintenance.info",
    "embedstore.upgrade": "embedstore.maintenance.upgrade",
    "embedstore.labels": "embedstore.maintenance.labels",
    "embedstore.label_options": "embedstore.maintenance.label_options",
    "embedstore.backbones.catalog": "embedstore.backbones.builtin",
    "embedstore.search.tuning": "embedstore.search.recall",
}


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


class _MovedModuleLoader(importlib.abc.Loader):
    """Loads an old module path as the module now at `new` (the same object), warning once per import."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"module {self.old} moved to {self.new}; import it from there ({self.old} works for one release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module is already imported."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.moved: dict[str, str] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = self.moved.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleLoader(fullname, new))


_FINDER = _MovedModuleFinder()


def alias_modules(moved: dict[str, str]) -> None:
    """Let each old module path in `moved` import (with a DeprecationWarning) as its new module."""
    _FINDER.moved.update(moved)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
