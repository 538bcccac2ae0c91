"""What `labels import` can be told and reports, and the label rules it shares with `ingest`: an empty
label is never written, and a tile given different labels by one run is settled by one policy.

A leaf (validation only), so the CLI builds its flags without importing the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import EmbedstoreError, a_few
from ..core.reports import JsonReport
from ..core.validation import Flag, OneOf, option, validate

LABEL_CONFLICT_POLICIES = ("first", "drop", "error")
Claims = list[tuple[str | None, str]]  # (label, where it came from), the first claim first


def on_label_conflict_option(copies: str, order: str) -> Any:
    """The `--on-label-conflict first|drop|error` field; `copies` says what can disagree, `order` which
    one is first (e.g. "in path order")."""
    return option(
        "first",
        OneOf(LABEL_CONFLICT_POLICIES),
        help=f"When {copies} carry different labels: keep the first {order}, drop the label (a label "
        "already in the store stays), or stop with an error.",
    )


def skip_empty_labels_option(skipped: str) -> Any:
    """The `--skip-empty-labels` field: rows with an empty label are refused unless it is set."""
    return option(
        False,
        Flag(),
        help=f"Rows with an empty or blank label: {skipped}, and count them (default: refuse the file).",
    )


def is_empty_label(label: str | None) -> bool:
    """A label is empty when the cell is missing, empty or only whitespace."""
    return label is None or not label.strip()


def empty_labels_error(path: Path, column: str, rows: Sequence[int], fix: str) -> EmbedstoreError:
    """The refusal of a file with empty labels: how many rows, the first few (1-based, after the header)."""
    shown = a_few(rows, 5)
    return EmbedstoreError(
        f"{path}: {len(rows)} row(s) have an empty {column!r} (row {shown}); fill them in, or pass "
        f"--skip-empty-labels to {fix}; nothing was written"
    )


def settle_conflict(tile_id: str, task: str, claims: Claims, policy: str) -> dict[str, Any] | None:
    """None when every claim agrees; else the conflict record with the label kept (first: the first
    claim's, drop: None); policy error raises EmbedstoreError naming the tile and every claim."""
    if len({label for label, _ in claims}) < 2:
        return None
    if policy == "error":
        shown = ", ".join(f"{label!r} from {where}" for label, where in claims)
        raise EmbedstoreError(
            f"tile {tile_id} has conflicting labels for task {task!r}: {shown}; nothing was written "
            "(fix the labels, or pass --on-label-conflict first|drop)"
        )
    kept = claims[0][0] if policy == "first" else None
    return {"tile_id": tile_id, "task": task, "claims": claims, "kept": kept}


def conflict_lines(conflicts: list[dict[str, Any]], given_by: str, order: str) -> list[str]:
    """Summary lines for settled conflicts: the count, the policy applied, and the first five tiles."""
    if not conflicts:
        return []
    dropped = all(conflict["kept"] is None for conflict in conflicts)
    how = "the label was dropped" if dropped else f"the first label ({order}) was kept"
    lines = [
        f"note: {len(conflicts)} tile(s) got different labels from {given_by}; {how} "
        "(--on-label-conflict first|drop|error):"
    ]
    for conflict in conflicts[:5]:
        claims = ", ".join(f"{label!r} from {where}" for label, where in conflict["claims"])
        lines.append(f"  tile {conflict['tile_id']}: {claims}; kept {conflict['kept']!r}")
    if len(conflicts) > 5:
        lines.append(f"  ... {len(conflicts) - 5} more (see --json)")
    return lines


def conflicts_as_dicts(conflicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conflict records for JSON: each claim as {label, file}."""
    return [
        {**c, "claims": [{"label": label, "file": where} for label, where in c["claims"]]} for c in conflicts
    ]


@dataclass
class LabelImportOptions:
    """What `embedstore labels import` can be told."""

    on_label_conflict: str = on_label_conflict_option("rows naming the same tile", "in row order")
    skip_empty_labels: bool = skip_empty_labels_option("skip them (a label already in the store stays)")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class LabelImportReport(JsonReport):
    task: str
    labels_written: int = 0
    labels_skipped_empty: int = 0  # rows with an empty label, skipped with skip_empty_labels
    label_conflicts: list[dict[str, Any]] = field(default_factory=list)  # tile_id, task, claims, kept

    def summary(self) -> str:
        lines = [f"{self.labels_written} label(s) written for task {self.task!r}"]
        if self.labels_skipped_empty:
            skipped = self.labels_skipped_empty
            lines.append(f"{skipped} row(s) with an empty label skipped (--skip-empty-labels)")
        lines += conflict_lines(self.label_conflicts, "several rows", "in row order")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["label_conflicts"] = conflicts_as_dicts(self.label_conflicts)
        return out
