"""A summary of what a store holds, for `embedstore info` and `Store.info()`."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .catalog import Catalog
from .damage import TableDamage, inspect_table
from .embedding_tables import dtype_name
from .errors import TableDamagedError
from .location import human_bytes, tree_size
from .schema import FILES, LABELS, SOURCES, TILES

UNREADABLE = "unreadable: its table is damaged"


def store_info(catalog: Catalog) -> dict[str, Any]:
    """Sources (ok / failed), files, tiles, tasks with label counts, rows / version / dim per table, bytes.

    Each table is looked at cheaply first (it opens, its newest manifest is there, its data files have
    the sizes its manifest records); a damaged table is reported as such (`damaged`), and what would be
    read from it is None. `embedstore check` reads every file.
    """
    damage = {name: inspect_table(catalog, name, scan=False) for name in catalog.table_names()}
    tables = {name: _table_summary(catalog, name, damage[name]) for name in catalog.table_names()}
    readable = {name for name, summary in tables.items() if "damaged" not in summary}
    sources = _sources(catalog) if SOURCES in readable else None
    return {
        "store": str(catalog.root),
        "sources": sources,
        "files": tables[FILES]["rows"] if FILES in readable else None,
        "tiles": tables[TILES]["rows"] if TILES in readable else None,
        "tasks": _label_counts(catalog.read(LABELS, columns=["task", "label"]))
        if LABELS in readable
        else None,
        "tables": tables,
        "damaged": sorted(set(tables) - readable),
        "disk_bytes": tree_size(catalog.root),
    }


def _sources(catalog: Catalog) -> dict[str, Any]:
    sources = catalog.read(SOURCES, columns=["uri", "status", "error"])
    statuses = sources.column("status").to_pylist()
    failed = [
        {"uri": uri, "error": error}
        for uri, status, error in zip(
            sources.column("uri").to_pylist(), statuses, sources.column("error").to_pylist(), strict=True
        )
        if status == "failed"
    ]
    return {"ok": statuses.count("ok"), "failed": len(failed), "failures": failed}


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


def _table_summary(catalog: Catalog, name: str, damage: TableDamage | None) -> dict[str, Any]:
    """rows, version (and dim, dtype of vectors); or `damaged`, the problem, when the table is."""
    if damage is not None:
        return {"damaged": damage.problem}
    try:
        dataset = catalog.dataset(name)
        summary: dict[str, Any] = {"rows": dataset.count_rows(), "version": int(dataset.version)}
    except TableDamagedError as error:
        return {"damaged": error.problem}
    vector = dataset.schema.field("vector") if "vector" in dataset.schema.names else None
    if vector is not None and pa.types.is_fixed_size_list(vector.type):
        summary["dim"] = vector.type.list_size
        summary["dtype"] = dtype_name(vector.type.value_type)
    return summary


def format_info(info: dict[str, Any]) -> str:
    """The summary as human-readable lines."""
    lines = [f"store   {info['store']}  ({human_bytes(info['disk_bytes'])} on disk)"]
    sources = info["sources"]
    if sources is None:
        lines.append(f"sources {UNREADABLE}")
    else:
        lines.append(f"sources {sources['ok']} ok, {sources['failed']} failed")
        lines += [f"  failed: {failure['uri']}: {failure['error']}" for failure in sources["failures"]]
    copies = info["files"] - sources["ok"] if sources is not None and info["files"] is not None else 0
    if copies > 0:
        lines.append(f"files   {info['files']} ({copies} byte-identical to another file, stored once)")
    lines.append(f"tiles   {UNREADABLE if info['tiles'] is None else info['tiles']}")
    if info["tasks"] is None:
        lines.append(f"tasks   {UNREADABLE}")
    elif info["tasks"]:
        lines.append("tasks")
        for task, classes in info["tasks"].items():
            total = sum(classes.values())
            shown = ", ".join(f"{label}: {count}" for label, count in classes.items())
            lines.append(f"  {task}: {total} labels ({shown})")
    lines.append("tables")
    for name, table in info["tables"].items():
        if "damaged" in table:
            lines.append(f"  {name}: DAMAGED: {table['damaged']}")
            continue
        dim = f", dim {table['dim']} {table['dtype']}" if "dim" in table else ""
        lines.append(f"  {name}: {table['rows']} rows, version {table['version']}{dim}")
    if info["damaged"]:
        lines.append(
            f"damaged: {', '.join(info['damaged'])}; `embedstore check {info['store']}` reads every file "
            "and names the fix"
        )
    return "\n".join(lines)
