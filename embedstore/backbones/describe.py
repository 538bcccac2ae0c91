"""Describing the registered backbones for people and for JSON."""

from __future__ import annotations

from typing import Any

from embedstore.backbones.registry import registered_backbones

_COLUMNS = (("key", "KEY"), ("dim", "DIM"), ("input_size", "SIZE"), ("mpp", "MPP"), ("status", "AVAILABLE"))


def describe_backbones() -> list[dict[str, Any]]:
    """One JSON-ready row per registered backbone: its spec fields plus `available` and `reason`."""
    rows = []
    for backbone in registered_backbones():
        ok, why = backbone.available()
        rows.append({**backbone.spec.to_dict(), "available": ok, "reason": why})
    return rows


def format_backbones(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of `describe_backbones()` rows, then each backbone's weights source."""
    cells = [
        {
            "key": row["key"],
            "dim": str(row["dim"]),
            "input_size": str(row["input_size"]),
            "mpp": "-" if row["mpp"] is None else f"{row['mpp']:g}",
            "status": "yes" if row["available"] else f"no: {row['reason']}",
        }
        for row in rows
    ]
    widths = {name: max([len(title)] + [len(c[name]) for c in cells]) for name, title in _COLUMNS}
    lines = ["  ".join(title.ljust(widths[name]) for name, title in _COLUMNS).rstrip()]
    lines += ["  ".join(c[name].ljust(widths[name]) for name, _ in _COLUMNS).rstrip() for c in cells]
    lines += ["", "weights:"] + [f"  {row['key']}: {row['weights_source']}" for row in rows]
    return "\n".join(lines)
