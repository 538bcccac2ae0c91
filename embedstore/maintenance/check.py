"""Checking a store like a filesystem check, and repairing what can be repaired.

Checked: every table opens, has its newest version and reads (else it is DAMAGED, with the version to
restore; checks that would read it are skipped, so --repair never deletes rows because of it); every
table holds one row per key; tiles, files, labels and embeddings point at rows that
exist (a tile's source, a label's or an embedding's tile); each embedding table's provenance parses
and fits its vectors; every table declares its key; sources recorded as complete have all their tiles.
Failed sources are listed, and claims that writers killed while writing left in `.claims/` (dead claims:
harmless, as the next write to their table takes them over, but they would keep `.claims` from emptying).
`repair` removes duplicate keys (keeping the oldest row of each) and orphans in one new version per table
changed, so `embedstore versions STORE --table T --restore V` undoes it, and dead claims (never those of
a writer that still runs).
Run repair while no other process writes to the store.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import lance
import polars as pl
import pyarrow as pa

from ..core.errors import EmbedstoreError
from ..core.location import remove_tree
from ..core.reports import JsonReport
from ..core.schema import (
    CORE_SCHEMAS,
    EMBEDDING_PREFIX,
    FILES,
    LABELS,
    SOURCES,
    TILES,
    declared_key,
    key_column,
    sql_string,
)
from ..storage.catalog import Catalog
from ..storage.damage import inspect_table
from ..storage.embedding_tables import dtype_name, recorded_provenance, table_name
from ..storage.keyed_writes import (
    CLAIMS_DIR,
    STAGING_DIR,
    dead_claims,
    remove_dead_claims,
    staging_owner_alive,
)

EXAMPLES = 3
PREDICTIONS_PREFIX = "pred__"  # tables written by heads.predict: tile_id (key), score, probabilities, label


@dataclass
class Finding:
    """One kind of problem in one table."""

    table: str
    kind: str  # damaged | duplicate-keys | orphans | provenance | undeclared-key | incomplete-sources
    # | staging-leftovers | dead-claims
    count: int
    message: str
    examples: list[str] = field(default_factory=list)
    repairable: bool = True


@dataclass
class CheckReport(JsonReport):
    store: str
    rows: dict[str, int] = field(default_factory=dict)  # rows checked per table
    findings: list[Finding] = field(default_factory=list)
    failed_sources: list[dict[str, str]] = field(default_factory=list)
    repaired: list[dict[str, Any]] = field(default_factory=list)  # table, removed, version
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        total = sum(self.rows.values())
        lines = [f"checked {len(self.rows)} tables, {total} rows in {self.store}"]
        for done in self.repaired:
            if done["version"] is None:
                lines.append(f"repaired {done['table']}: {done['removed']} half-created table(s) removed")
            else:
                lines.append(
                    f"repaired {done['table']}: {done['removed']} row(s) removed in version {done['version']}"
                )
        for finding in self.findings:
            shown = f" (e.g. {', '.join(finding.examples)})" if finding.examples else ""
            fix = "" if finding.repairable else " [not repaired by --repair]"
            lines.append(f"problem {finding.table}: {finding.message}{shown}{fix}")
        for failed in self.failed_sources:
            lines.append(f"failed source: {failed['uri']}: {failed['error']}")
        lines += [f"note: {note}" for note in self.notes]
        if self.ok:
            lines.append("ok: no problems found")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_store(catalog: Catalog) -> CheckReport:
    """Look for every problem listed in the module docstring; writes nothing."""
    return _Checker(catalog).run()


def repair_store(catalog: Catalog) -> CheckReport:
    """Remove duplicate keys and orphans (one delete, hence one new version, per table), then re-check."""
    catalog.require_writable()
    checker = _Checker(catalog)
    before = checker.run()
    repaired = []
    for name, predicate in checker.deletions():
        removed = catalog.delete(name, predicate)
        repaired.append({"table": name, "removed": removed, "version": int(catalog.dataset(name).version)})
    if checker.staging_leftovers:
        for entry in checker.staging_leftovers:  # not those of running processes
            remove_tree(catalog.root / STAGING_DIR / entry)
        repaired.append({"table": STAGING_DIR, "removed": len(checker.staging_leftovers), "version": None})
    for name in checker.dead_claims:  # removes only the claims of writers dead now: a live one's stay
        removed = remove_dead_claims(catalog.root / f"{name}.lance")
        claims = lance.dataset(str(catalog.root / CLAIMS_DIR / f"{name}.lance"))
        repaired.append({"table": f"{CLAIMS_DIR}/{name}", "removed": removed, "version": int(claims.version)})
    after = check_store(catalog)
    after.repaired = repaired
    if not repaired:
        unrepairable = [f for f in before.findings if not f.repairable]
        after.notes.append(
            "nothing to repair; nothing was written"
            + (" (the problems above need the fixes they name)" if unrepairable else "")
        )
    return after


class _Checker:
    """Reads each table's keys once and derives findings and the deletions that repair them."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.report = CheckReport(str(catalog.root))
        self.extra_rowids: dict[str, list[int]] = {}  # table -> row ids of duplicate copies to remove
        self.orphans: dict[str, tuple[str, list[str]]] = {}  # table -> (column, values) to remove
        self.staging_leftovers: list[str] = []
        self.dead_claims: list[str] = []  # tables whose claims table holds claims of dead writers
        self.damaged: set[str] = set()

    def run(self) -> CheckReport:
        names = self.catalog.table_names()
        missing = [name for name in CORE_SCHEMAS if name not in names]
        if missing:
            raise EmbedstoreError(
                f"{self.catalog.root} lacks core table(s) {', '.join(missing)}; the store is damaged beyond "
                "repair: restore it from a copy, or re-create it and ingest again"
            )
        self.damaged = {name for name in names if self._damage(name)}
        keys = {name: self._keys(name) for name in names if name not in self.damaged}
        self._references(names, keys)
        for name in self.catalog.embedding_table_names():
            if name not in self.damaged:
                self._provenance(name)
        if not {SOURCES, TILES} & self.damaged:
            self._incomplete_sources(keys[SOURCES], keys[TILES])
        if SOURCES not in self.damaged:
            failed = keys[SOURCES].filter(pl.col("status") == "failed")
            self.report.failed_sources = [
                {"uri": row["uri"], "error": row["error"]} for row in failed.select("uri", "error").to_dicts()
            ]
        self._staging()
        self._claims()
        return self.report

    def _references(self, names: list[str], keys: dict[str, pl.DataFrame]) -> None:
        """Orphans: rows pointing at rows that do not exist. A check that would read a damaged table is
        skipped (and said so): its rows are not known, so nothing may be called an orphan by them."""
        predictions = [name for name in names if name.startswith(PREDICTIONS_PREFIX)]
        by_tile = [LABELS, *self.catalog.embedding_table_names(), *predictions]
        if SOURCES in self.damaged:
            self._skipped([name for name in [TILES, FILES, *by_tile] if name not in self.damaged], SOURCES)
            return
        source_ids = list(set(keys[SOURCES]["source_id"].to_list()))
        if FILES not in self.damaged:
            self._orphans(
                FILES,
                keys[FILES].filter(~pl.col("source_id").is_in(source_ids)),
                "uri",
                "file(s) recorded for a source that is not in the sources table",
            )
        if TILES in self.damaged:
            self._skipped([name for name in by_tile if name not in self.damaged], TILES)
            return
        tiles = keys[TILES]
        orphan_tiles = tiles.filter(~pl.col("source_id").is_in(source_ids))
        kept_tiles = list(set(tiles["tile_id"].to_list()) - set(orphan_tiles["tile_id"].to_list()))
        self._orphans(
            TILES,
            orphan_tiles,
            "tile_id",
            "tile(s) whose source is not in the sources table (an interrupted ingest leaves these: "
            "run it again to complete their sources, or --repair to remove them)",
        )
        for name in (name for name in by_tile if name not in self.damaged):
            frame = keys[name].filter(~pl.col("tile_id").is_in(kept_tiles))
            what = "prediction(s)" if name in predictions else "embedding row(s)"
            what = "label(s)" if name == LABELS else what
            self._orphans(
                name, frame, "tile_id", f"{what} of tiles that are not in the store (or have no source)"
            )

    def _skipped(self, tables: list[str], damaged: str) -> None:
        if tables:
            self.report.notes.append(
                f"orphans of {', '.join(tables)} not checked (and not repaired): they are found through "
                f"{damaged}, which is damaged"
            )

    def deletions(self) -> list[tuple[str, str]]:
        """(table, SQL predicate) for every table with duplicate copies or orphans to remove."""
        out = []
        for name in self.catalog.table_names():
            if name in self.damaged:
                continue
            parts = []
            if name in self.extra_rowids:
                parts.append(f"_rowid IN ({', '.join(str(i) for i in self.extra_rowids[name])})")
            if name in self.orphans:
                column, values = self.orphans[name]
                parts.append(f"{column} IN ({', '.join(sql_string(v) for v in values)})")
            if parts:
                out.append((name, " OR ".join(f"({p})" for p in parts)))
        return out

    # -- reading --------------------------------------------------------------------------------------

    def _keys(self, name: str) -> pl.DataFrame:
        """The table's key and reference columns with row ids; records duplicate keys and undeclared keys."""
        dataset = self.catalog.dataset(name)
        key = key_column(name)
        if name not in CORE_SCHEMAS and not name.startswith(EMBEDDING_PREFIX):
            key = declared_key(dataset.schema) or key  # e.g. a head's pred__<name>, keyed by tile_id
        columns = {
            SOURCES: ["source_id", "status", "uri", "error", "n_tiles"],
            TILES: ["tile_id", "source_id"],
        }
        columns[FILES] = ["uri", "source_id"]
        wanted = columns.get(name, [key, "tile_id"] if "tile_id" in dataset.schema.names else [key])
        arrow = dataset.to_table(columns=list(dict.fromkeys([key, *wanted])), with_row_id=True)
        frame = cast(pl.DataFrame, pl.from_arrow(arrow))  # a Table gives a DataFrame
        self.report.rows[name] = frame.height
        if declared_key(dataset.schema) != key:
            self.report.findings.append(
                Finding(
                    name,
                    "undeclared-key",
                    1,
                    f"the table does not declare {key!r} as its key, so concurrent writers could duplicate "
                    "rows; run `embedstore upgrade STORE`",
                    repairable=False,
                )
            )
        extras = frame.sort("_rowid").filter(~pl.col(key).is_first_distinct())
        if extras.height:
            self.extra_rowids[name] = extras["_rowid"].to_list()
            counts = Counter(extras[key].to_list())
            self.report.findings.append(
                Finding(
                    name,
                    "duplicate-keys",
                    extras.height,
                    f"{extras.height} extra row(s) for {len(counts)} {key!r} key(s) (one per key is right)",
                    [str(k) for k, _ in counts.most_common(EXAMPLES)],
                )
            )
        return frame

    def _damage(self, name: str) -> bool:
        """Record a damaged table (it does not open, misses its newest version, or its files do not
        read) with the command that restores its newest version that reads."""
        damage = inspect_table(self.catalog, name, scan=True)
        if damage is None:
            return False
        message = f"DAMAGED: {damage.problem}; {self._damage_fix(name, damage.restore_to)}"
        self.report.findings.append(Finding(name, "damaged", 1, message, repairable=False))
        return True

    def _damage_fix(self, name: str, restore_to: int | None) -> str:
        store = self.catalog.root
        if restore_to is not None:
            return (
                f"restore version {restore_to}, the newest that reads: "
                f"`embedstore versions {store} --table {name} --restore {restore_to}`, then run "
                "again the ingest or embed that wrote what was lost"
            )
        fix = f"no version of it reads: restore {self.catalog.table_path(name)} from a copy"
        if name.startswith(EMBEDDING_PREFIX):
            fix += f", or remove that folder and run `embedstore embed {store}` again"
        return fix

    def _orphans(self, name: str, frame: pl.DataFrame, column: str, what: str) -> None:
        if frame.height == 0:
            return
        values = frame[column].unique(maintain_order=True).to_list()
        self.orphans[name] = (column, values)
        self.report.findings.append(
            Finding(
                name, "orphans", frame.height, f"{frame.height} {what}", [str(v) for v in values[:EXAMPLES]]
            )
        )

    def _provenance(self, name: str) -> None:
        schema: pa.Schema = self.catalog.dataset(name).schema
        problems = []
        try:
            provenance = recorded_provenance(schema, name)
        except EmbedstoreError as error:
            problems.append(str(error))
        else:
            vector = schema.field("vector").type
            if vector.list_size != provenance.dim:
                problems.append(f"vectors have {vector.list_size} dims, the provenance says {provenance.dim}")
            dtype = dtype_name(vector.value_type)
            if dtype != provenance.store_dtype:
                problems.append(f"vectors are {dtype}, the provenance says {provenance.store_dtype}")
            if table_name(provenance.backbone) != name:
                problems.append(
                    f"the provenance names backbone {provenance.backbone!r}, which belongs in another table"
                )
        for problem in problems:
            self.report.findings.append(Finding(name, "provenance", 1, problem, repairable=False))

    def _incomplete_sources(self, sources: pl.DataFrame, tiles: pl.DataFrame) -> None:
        present = tiles.group_by("source_id").len()
        ok = sources.filter(pl.col("status") == "ok").join(present, on="source_id", how="left")
        short = ok.filter(pl.col("len").fill_null(0) < pl.col("n_tiles"))
        if short.height:
            self.report.findings.append(
                Finding(
                    SOURCES,
                    "incomplete-sources",
                    short.height,
                    f"{short.height} source(s) recorded as ingested miss some of their tiles; "
                    "run the same `embedstore ingest` again to add them",
                    short["uri"].to_list()[:EXAMPLES],
                    repairable=False,
                )
            )

    def _staging(self) -> None:
        """Half-created tables: of a process that is gone (a problem), or still creating one (a note)."""
        staging = self.catalog.root / STAGING_DIR
        entries = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
        running = [entry for entry in entries if staging_owner_alive(entry)]
        self.staging_leftovers = [entry for entry in entries if entry not in running]
        if running:
            self.report.notes.append(f"{len(running)} table(s) being created by running processes")
        if self.staging_leftovers:
            self.report.findings.append(
                Finding(
                    STAGING_DIR,
                    "staging-leftovers",
                    len(self.staging_leftovers),
                    f"{len(self.staging_leftovers)} half-created table(s) left by an interrupted run (the "
                    "next table created on the machine that ran it removes them; so does --repair)",
                    self.staging_leftovers[:EXAMPLES],
                )
            )

    def _claims(self) -> None:
        """Claims of writers that died holding them (killed between claiming keys and releasing them)."""
        folder = self.catalog.root / CLAIMS_DIR
        names = sorted(p.name.removesuffix(".lance") for p in folder.iterdir()) if folder.is_dir() else []
        for name in names:
            count, owners = dead_claims(self.catalog.root / f"{name}.lance")
            if not count:
                continue
            self.dead_claims.append(name)
            self.report.findings.append(
                Finding(
                    f"{CLAIMS_DIR}/{name}",
                    "dead-claims",
                    count,
                    f"{count} claim(s) of {len(owners)} writer(s) that died while writing {name!r} (the next "
                    "write to it takes them over; so does --repair)",
                    owners[:EXAMPLES],
                )
            )
