"""Describing the registered backbones for people and for JSON."""

from __future__ import annotations

from typing import Any

from embedstore.backbones.base import Backbone
from embedstore.backbones.registry import registered_backbones

_COLUMNS = (
    ("key", "KEY"),
    ("dim", "DIM"),
    ("input_size", "SIZE"),
    ("mpp", "MPP"),
    ("licence", "LICENCE"),
    ("gated", "GATED"),
    ("status", "AVAILABLE"),
)


def describe_backbones() -> list[dict[str, Any]]:
    """One JSON-ready row per registered backbone: its spec fields plus `available` and `reason`; presets
    add `weights_found`, the weights repository and files, and the preprocessing recipe."""
    rows = []
    for backbone in registered_backbones():
        ok, why = backbone.available()
        rows.append({**backbone.spec.to_dict(), "available": ok, "reason": why, **_preset_fields(backbone)})
    return rows


def _preset_fields(backbone: Backbone) -> dict[str, Any]:
    from embedstore.backbones.presets import PresetBackbone
    from embedstore.backbones.presets.builders import missing_extra
    from embedstore.backbones.presets.weights import find_weights

    if not isinstance(backbone, PresetBackbone):
        return {}
    preset = backbone.preset
    found, _ = find_weights(preset)
    return {
        "weights_found": found is not None,
        "weights_path": str(found) if found is not None else None,
        "repo": preset.repo,
        "weight_files": list(preset.weight_files),
        "download": preset.download_command,
        "env_var": preset.env_var,
        "extra": preset.extra or None,
        "extra_missing": bool(missing_extra(preset)),
        "precision": preset.precision,
        "preprocessing": preset.preprocessing(),
        "verified": preset.verified,
        "sources": list(preset.sources),
        "note": preset.note,
    }


def _status(row: dict[str, Any]) -> str:
    if row["available"]:
        return "yes"
    if "weights_found" in row:
        if row["extra_missing"]:
            return f"no: pip install 'embedstore[{row['extra']}]'"
        if not row["weights_found"]:
            return f"no weights: {row['download']}"
    return f"no: {row['reason']}"


def format_backbones(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of `describe_backbones()` rows, then each backbone's weights source."""
    cells = [
        {
            "key": row["key"],
            "dim": str(row["dim"]),
            "input_size": str(row["input_size"]),
            "mpp": "-" if row["mpp"] is None else f"{row['mpp']:g}",
            "licence": str(row.get("licence") or "unknown").split(":")[0],
            "gated": "yes" if row.get("gated") else "-",
            "status": _status(row),
        }
        for row in rows
    ]
    widths = {name: max([len(title)] + [len(c[name]) for c in cells]) for name, title in _COLUMNS}
    lines = ["  ".join(title.ljust(widths[name]) for name, title in _COLUMNS).rstrip()]
    lines += ["  ".join(c[name].ljust(widths[name]) for name, _ in _COLUMNS).rstrip() for c in cells]
    lines += ["", "weights:"] + [f"  {row['key']}: {row['weights_source']}" for row in rows]
    return "\n".join(lines)
