"""A summary of what a store holds, for `embedstore info` and `Store.info()`."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .catalog import Catalog
from .embedding_tables import dtype_name
from .location import tree_size
from .schema import FILES, LABELS, SOURCES, TILES


def store_info(catalog: Catalog) -> dict[str, Any]:
    """Sources (ok / failed), files, tiles, tasks with label counts, rows / version / dim per table, bytes."""
    sources = catalog.read(SOURCES, columns=["uri", "status", "error"])
    statuses = sources.column("status").to_pylist()
    failed = [
        {"uri": uri, "error": error}
        for uri, status, error in zip(
            sources.column("uri").to_pylist(), statuses, sources.column("error").to_pylist(), strict=True
        )
        if status == "failed"
    ]
    return {
        "store": str(catalog.root),
        "sources": {"ok": statuses.count("ok"), "failed": len(failed), "failures": failed},
        "files": catalog.count(FILES),
        "tiles": catalog.count(TILES),
        "tasks": _label_counts(catalog.read(LABELS, columns=["task", "label"])),
        "tables": {name: _table_summary(catalog, name) for name in catalog.table_names()},
        "disk_bytes": tree_size(catalog.root),
    }


def _label_counts(labels: pa.Table) -> dict[str, dict[str, int]]:
    tasks: dict[str, dict[str, int]] = {}
    if labels.num_rows == 0:
        return tasks
    counts = labels.group_by(["task", "label"]).aggregate([("label", "count")])
    for task, label, count in zip(
        counts.column("task").to_pylist(),
        counts.column("label").to_pylist(),
        counts.column("label_count").to_pylist(),
        strict=True,
    ):
        tasks.setdefault(task, {})[str(label)] = int(count)
    return {task: dict(sorted(classes.items())) for task, classes in sorted(tasks.items())}


def _table_summary(catalog: Catalog, name: str) -> dict[str, Any]:
    dataset = catalog.dataset(name)
    summary: dict[str, Any] = {"rows": dataset.count_rows(), "version": int(dataset.version)}
    vector = dataset.schema.field("vector") if "vector" in dataset.schema.names else None
    if vector is not None and pa.types.is_fixed_size_list(vector.type):
        summary["dim"] = vector.type.list_size
        summary["dtype"] = dtype_name(vector.type.value_type)
    return summary


def format_info(info: dict[str, Any]) -> str:
    """The summary as human-readable lines."""
    lines = [f"store   {info['store']}  ({_human_bytes(info['disk_bytes'])} on disk)"]
    sources = info["sources"]
    lines.append(f"sources {sources['ok']} ok, {sources['failed']} failed")
    lines += [f"  failed: {failure['uri']}: {failure['error']}" for failure in sources["failures"]]
    copies = info["files"] - sources["ok"]
    if copies > 0:
        lines.append(f"files   {info['files']} ({copies} byte-identical to another file, stored once)")
    lines.append(f"tiles   {info['tiles']}")
    if info["tasks"]:
        lines.append("tasks")
        for task, classes in info["tasks"].items():
            total = sum(classes.values())
            shown = ", ".join(f"{label}: {count}" for label, count in classes.items())
            lines.append(f"  {task}: {total} labels ({shown})")
    lines.append("tables")
    for name, table in info["tables"].items():
        dim = f", dim {table['dim']} {table['dtype']}" if "dim" in table else ""
        lines.append(f"  {name}: {table['rows']} rows, version {table['version']}{dim}")
    return "\n".join(lines)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
