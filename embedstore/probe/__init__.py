"""Probing stored embeddings: which backbone suits a domain, from a labelled proxy task (kNN, prototype
and linear probes over shared group-aware folds) and from label-free indicators.

    report = store.probe("crc_nuclei", backbones="all")
    print(report.format()); report.plot("probe.png"); report.write_json("probe.json")

The pieces heads reuses (`task_tiles`, `group_folds`, `split_scores`, ...) live in `embedstore.evaluate`;
their old names here still work, with a DeprecationWarning, for one release.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports
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


__getattr__ = lazy_exports(__name__, _LAZY, otherwise=partial(_MOVED, stacklevel=3))  # moved names warn
