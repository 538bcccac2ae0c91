"""Probing stored embeddings: which backbone suits a domain, from a labelled proxy task (kNN, prototype
and linear probes over shared group-aware folds) and from label-free indicators.

    report = store.probe("crc_nuclei", backbones="all")
    print(report.format()); report.plot("probe.png"); report.write_json("probe.json")

Also the public pieces heads reuse, so that a head and a probe split and score alike: `task_tiles` (a
task's labelled tiles, classes and groups), `group_folds` (stratified group k-fold), `split_scores`
(balanced accuracy, macro-F1, AUROC, F1 per class of one test set).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .options import ProbeOptions

if TYPE_CHECKING:
    from .data import TaskTiles, task_tiles
    from .metrics import split_scores
    from .report import ProbeReport
    from .splits import Split, group_folds

# loaded on first use (the report pulls in polars, metrics scipy): `embedstore --help` stays fast
_LAZY = {
    "ProbeReport": ".report",
    "TaskTiles": ".data",
    "task_tiles": ".data",
    "split_scores": ".metrics",
    "Split": ".splits",
    "group_folds": ".splits",
}

__all__ = [
    "ProbeOptions",
    "ProbeReport",
    "TaskTiles",
    "task_tiles",
    "split_scores",
    "Split",
    "group_folds",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'embedstore.probe' has no attribute {name!r}")
