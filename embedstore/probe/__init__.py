"""Probing stored embeddings: which backbone suits a domain, from a labelled proxy task (kNN, prototype
and linear probes over shared group-aware folds) and from label-free indicators.

    report = store.probe("crc_nuclei", backbones="all")
    print(report.format()); report.plot("probe.png"); report.write_json("probe.json")

The pieces heads reuses (`task_tiles`, `group_folds`, `split_scores`, ...) live in `embedstore.evaluate`;
their old names here still work, with a DeprecationWarning, for one release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.moved import forward
from .options import ProbeOptions

if TYPE_CHECKING:
    from .report import ProbeReport

# loaded on first use (the report pulls in polars and scipy): `embedstore --help` stays fast
_LAZY = {"ProbeReport": ".report"}
# moved to embedstore.evaluate: still importable from here, with a DeprecationWarning, for one release
_MOVED = forward(
    "embedstore.probe",
    "embedstore.evaluate",
    {"TaskTiles", "task_tiles", "split_scores", "Split", "group_folds"},
)

__all__ = ["ProbeOptions", "ProbeReport"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    return _MOVED(name, stacklevel=3)  # warns for a moved name; AttributeError for any other
