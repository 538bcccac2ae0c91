"""Shared by the benchmarks: what the safe write path costs against a plain append, and start-up time.

`replay_cost` takes the rows a run wrote into a table and writes them again, in the same chunk sizes,
into two empty tables of the same schema: once with plain Lance appends (what embedstore 0.1 did, and
what duplicated rows under concurrency) and once through `embedstore.writes.insert_missing` (the keyed
path every writer now uses). Both see the same data in the same run, so their difference is the cost
of safety; the benchmarks report it as a share of the run's own wall time.

`startup_seconds` times whole commands (`embedstore --help`, `embedstore info STORE`) as a user runs
them, median of several runs after a warm-up.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lance

from embedstore.catalog import Catalog
from embedstore.writes import create_table, insert_missing


def replay_cost(store: Catalog, table: str, chunk_rows: int) -> dict[str, float]:
    """Seconds to write `table`'s rows again in chunks: plain appends vs the keyed path."""
    rows = store.read(table)
    schema = store.dataset(table).schema
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="write-path-") as tmp:
        for mode in ("append", "keyed"):
            root = Path(tmp) / mode
            root.mkdir()
            create_table(root, table, schema)
            path = root / f"{table}.lance"
            started = time.perf_counter()
            for start in range(0, rows.num_rows, chunk_rows):
                chunk = rows.slice(start, chunk_rows)
                if mode == "append":
                    lance.write_dataset(chunk, str(path), mode="append")
                else:
                    insert_missing(path, table, chunk)
            seconds[mode] = time.perf_counter() - started
            assert lance.dataset(str(path)).count_rows() == rows.num_rows
    return {"rows": rows.num_rows, "commits": -(-rows.num_rows // chunk_rows), **seconds}


def command_prefix() -> list[str]:
    """How to run the `embedstore` command: the installed script, else this Python with the module."""
    script = shutil.which("embedstore", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "cli.main"]


def startup_seconds(args: list[str], runs: int = 5, command: list[str] | None = None) -> float:
    """Median wall time of `embedstore ARGS` (or of `command`), after a warm-up run."""
    command = command or [*command_prefix(), *args]
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
