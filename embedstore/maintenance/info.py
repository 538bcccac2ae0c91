"""A summary of what a store holds, for `embedstore info` and `Store.info()`: its tables, and the indexes
and heads saved beside them with the table versions they are bound to (read from their JSON files only:
no FAISS, no torch)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..core.errors import EmbedstoreError, TableDamagedError
from ..core.location import human_bytes, tree_size
from ..core.schema import FILES, LABELS, SOURCES, TILES
from ..storage.catalog import Catalog
from ..storage.damage import TableDamage, inspect_table
from ..storage.embedding_tables import dtype_name, recorded_provenance
from ..storage.saved import SavedRecord, head_records, index_records
from ..storage.versions import FRAGMENT_LIMIT, small_fragments

UNREADABLE = "unreadable: its table is damaged"


def store_info(catalog: Catalog) -> dict[str, Any]:
    """Sources (ok / failed), files, tiles, tasks with label counts, rows / version / dim per table, the
    saved indexes and heads with the table versions they are bound to (`saved_status`), bytes.

    Each table is looked at cheaply first (it opens, its newest manifest is there, its data files have
    the sizes its manifest records); a damaged table is reported as such (`damaged`), and what would be
    read from it is None. `embedstore check` reads every file.
    """
    damage = {name: inspect_table(catalog, name, scan=False) for name in catalog.table_names()}
    tables = {name: _table_summary(catalog, name, damage[name]) for name in catalog.table_names()}
    readable = {name for name, summary in tables.items() if "damaged" not in summary}
    sources = _sources(catalog) if SOURCES in readable else None
    history = _Tables(catalog, tables)
    return {
        "store": str(catalog.root),
        "sources": sources,
        "files": tables[FILES]["rows"] if FILES in readable else None,
        "tiles": tables[TILES]["rows"] if TILES in readable else None,
        "tasks": _label_counts(catalog.read(LABELS, columns=["task", "label"]))
        if LABELS in readable
        else None,
        "tables": tables,
        "indexes": [_index(record, history) for record in index_records(catalog)],
        "heads": [_head(record, history) for record in head_records(catalog)],
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
    """rows, version, versions (kept on disk), fragments (and how many are small: under the rows
    Lance's compaction writes), dim and dtype of vectors; or `damaged`, the problem, when the table is."""
    if damage is not None:
        return {"damaged": damage.problem}
    try:
        dataset = catalog.dataset(name)
        summary: dict[str, Any] = {"rows": dataset.count_rows(), "version": int(dataset.version)}
        summary["versions"] = len(dataset.versions())
        summary["fragments"] = len(dataset.get_fragments())
        summary["small_fragments"] = small_fragments(dataset)
    except TableDamagedError as error:
        return {"damaged": error.problem}
    vector = dataset.schema.field("vector") if "vector" in dataset.schema.names else None
    if vector is not None and pa.types.is_fixed_size_list(vector.type):
        summary["dim"] = vector.type.list_size
        summary["dtype"] = dtype_name(vector.type.value_type)
    return summary


class _Tables:
    """The tables' newest versions and rows (from the summaries), and what saved things are compared
    with: rows at an older version and the weights a table holds, each read once and cheaply (metadata
    only)."""

    def __init__(self, catalog: Catalog, tables: dict[str, dict[str, Any]]) -> None:
        self.catalog, self.tables = catalog, tables
        self._rows: dict[tuple[str, int], int | None] = {}
        self._weights: dict[str, str | None] = {}

    def rows_at(self, table: str, version: int) -> int | None:
        """Rows of `table` at `version`; None when that version is gone (compacted) or cannot be read."""
        if (table, version) not in self._rows:
            try:
                old = self.catalog.dataset(table).checkout_version(version)
                self._rows[table, version] = int(old.count_rows())
            except (EmbedstoreError, OSError, ValueError, RuntimeError):
                self._rows[table, version] = None
        return self._rows[table, version]

    def weights(self, table: str) -> str | None:
        if table not in self._weights:
            try:
                schema = self.catalog.dataset(table).schema
                self._weights[table] = recorded_provenance(schema, table).weights_sha256
            except (EmbedstoreError, OSError, ValueError):
                self._weights[table] = None
        return self._weights[table]

    def compare(self, table: str, version: int, weights: str) -> dict[str, Any]:
        """How a thing bound to `version` of `table` (vectors of `weights`) stands with the table now:
        status current (that version is the newest), behind (the table has changed since: `rows_added`,
        None when the old version is gone), stale (the table is gone, lost rows, went back to an older
        version or holds other weights: `problem` says which) or damaged (the table is)."""
        summary = self.tables.get(table)
        if summary is None:
            return {"status": "stale", "problem": f"{table} is gone", "table_version_now": None}
        if "damaged" in summary:
            return {"status": "damaged", "problem": f"{table} is damaged", "table_version_now": None}
        now = summary["version"]
        found: dict[str, Any] = {"table_version_now": now, "rows_added": 0, "status": "current"}
        if self.weights(table) != weights:
            return {**found, "status": "stale", "problem": f"{table} now holds vectors of other weights"}
        if now == version:
            return found
        if now < version:
            return {**found, "status": "stale", "problem": f"{table} went back to v{now}"}
        then = self.rows_at(table, version)
        added = None if then is None else summary["rows"] - then
        if added is not None and added < 0:
            return {**found, "status": "stale", "problem": f"{table} lost {-added} rows since v{version}"}
        return {**found, "status": "behind", "rows_added": added}


def _saved_problem(record: SavedRecord, **identity: Any) -> dict[str, Any]:
    return {"name": record.name, **identity, "status": "damaged", "problem": record.problem}


def _index(saved: SavedRecord, tables: _Tables) -> dict[str, Any]:
    """An index's listing: what it is, the table version it is bound to, and how it stands now."""
    if saved.record is None:
        return _saved_problem(saved, table=saved.path.replace("\\", "/").split("/")[-3])
    record = saved.record
    centred = record["center"] and record["metric"] == "cosine"
    on = record.get("centered_on")
    entry = {
        "name": saved.name,
        **_picked(record, "table", "backbone", "backend", "kind", "metric"),
        "centring": _centring(on, record.get("centered_on_where")) if centred else "none",
        **_picked(record, "rows", "table_version"),
        "index_bytes": record.get("index_bytes"),  # on disk (None: lancedb, or saved before it was kept)
        "memory_bytes": record.get("memory_bytes"),  # about, once loaded
    }
    return {**entry, **_table_now(record, tables)}


def _picked(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The record's values of `keys`, in that order."""
    return {key: record[key] for key in keys}


def _table_now(record: dict[str, Any], tables: _Tables) -> dict[str, Any]:
    """How the embedding table an index or head was made from stands now (its version, its weights)."""
    return tables.compare(record["table"], record["table_version"], record["weights_sha256"])


def _centring(on: Any, where: Any) -> str:
    """table, none, or `subset: SQL` for an index built with --center-on (older manifests: table)."""
    if on == "subset" and isinstance(where, str):
        return f"subset: {where}"
    return on if isinstance(on, str) and on else "table"


def _head(saved: SavedRecord, tables: _Tables) -> dict[str, Any]:
    """A head's listing: task, backbone, kind, the table and labels versions it was trained at, its
    validation metric (the one early stopping watched), and how its table stands now."""
    if saved.record is None:
        return _saved_problem(saved)
    record = saved.record
    scores = record["validation"]
    watched = (record.get("params") or {}).get("early_stopping")
    metric = next((m for m in (watched, "auroc", *scores) if m in scores), None)
    labels_then = record.get("labels_version")
    labels = tables.tables.get(LABELS, {})
    labels_now = labels.get("version")
    entry = {
        "name": saved.name,
        **_picked(record, "task", "backbone", "kind", "table", "table_version"),
        "labels_version": labels_then if isinstance(labels_then, int) else None,
        "labels_version_now": labels_now,
        "validation": {"metric": metric, "value": scores.get(metric) if metric else None},
    }
    entry["labels_changed"] = (
        None if entry["labels_version"] is None or labels_now is None else labels_now != labels_then
    )
    return {**entry, **_table_now(record, tables)}


def _aligned(rows: list[list[str]], damaged: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    """Rows of cells as lines, each column padded to its widest cell; then the damaged entries, (name,
    problem), their names in the first column."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    widths[0] = max([widths[0], *(len(name) for name, _ in damaged)])
    lines = [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return lines + [f"{indent}{name.ljust(widths[0])}  {problem}" for name, problem in damaged]


def _standing(entry: dict[str, Any], what: str) -> str:
    """current / behind (how far) / stale or damaged (why), in words."""
    if entry["status"] == "current":
        return "current"
    if entry["status"] == "behind":
        added = entry.get("rows_added")
        rows = f", +{added} rows" if added is not None else ""
        return f"behind: table now v{entry['table_version_now']}{rows} ({what})"
    return f"{entry['status'].upper()}: {entry['problem']}"


def _index_lines(indexes: list[dict[str, Any]]) -> list[str]:
    rows = [["name", "table", "index", "centring", "rows", "bound to", "status"]]
    damaged = [(e["name"], f"{e['table']}  {_standing(e, '')}") for e in indexes if "backend" not in e]
    for entry in indexes:
        if "backend" not in entry:
            continue
        rows.append(
            [
                entry["name"],
                entry["table"],
                f"{entry['backend']} {entry['kind']} {entry['metric']}",
                entry["centring"],
                str(entry["rows"]),
                f"v{entry['table_version']}",
                _standing(entry, "search adds them"),
            ]
        )
    return _aligned(rows, damaged)


def _head_lines(heads: list[dict[str, Any]]) -> list[str]:
    rows = [["name", "task", "backbone", "head", "trained at", "validation", "status"]]
    damaged = [(entry["name"], _standing(entry, "")) for entry in heads if "task" not in entry]
    for entry in heads:
        if "task" not in entry:
            continue
        labels = "" if entry["labels_version"] is None else f", labels v{entry['labels_version']}"
        metric, value = entry["validation"]["metric"], entry["validation"]["value"]
        score = f"{metric} {value:.3f}" if isinstance(value, int | float) else (metric or "-")
        status = _standing(entry, "trained before them")
        if entry["labels_changed"]:
            status += f"; labels now v{entry['labels_version_now']}"
        rows.append(
            [
                entry["name"],
                entry["task"],
                entry["backbone"],
                entry["kind"],
                f"v{entry['table_version']}{labels}",
                score,
                status,
            ]
        )
    return _aligned(rows, damaged)


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
    many: list[str] = []
    for name, table in info["tables"].items():
        if "damaged" in table:
            lines.append(f"  {name}: DAMAGED: {table['damaged']}")
            continue
        dim = f", dim {table['dim']} {table['dtype']}" if "dim" in table else ""
        lines.append(
            f"  {name}: {table['rows']} rows, version {table['version']}{dim}; "
            f"{table['fragments']} fragment(s), {table['versions']} version(s) kept"
        )
        if table["small_fragments"] > FRAGMENT_LIMIT:
            many.append(name)
    if many:
        lines.append(
            f"  {', '.join(many)}: more than {FRAGMENT_LIMIT} small fragments slow reads and writes; "
            f"`embedstore compact {info['store']}` merges them (so does the next embed or ingest)"
        )
    if info.get("indexes"):
        lines += ["indexes", *_index_lines(info["indexes"])]
    if info.get("heads"):
        lines += ["heads", *_head_lines(info["heads"])]
    if info["damaged"]:
        lines.append(
            f"damaged: {', '.join(info['damaged'])}; `embedstore check {info['store']}` reads every file "
            "and names the fix"
        )
    return "\n".join(lines)
