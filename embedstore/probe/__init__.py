"""Probing stored embeddings: which backbone suits a domain, from a labelled proxy task (kNN, prototype
and linear probes over shared group-aware folds) and from label-free indicators.

    report = store.probe("crc_nuclei", backbones="all")
    print(report.format()); report.plot("probe.png"); report.write_json("probe.json")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .options import ProbeOptions

if TYPE_CHECKING:
    from .report import ProbeReport

__all__ = ["ProbeOptions", "ProbeReport"]


def __getattr__(name: str) -> Any:  # the report pulls in polars: loaded on first use (fast CLI start)
    if name == "ProbeReport":
        from .report import ProbeReport

        return ProbeReport
    raise AttributeError(f"module 'embedstore.probe' has no attribute {name!r}")
