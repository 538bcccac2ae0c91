"""A writer in a process of its own, for the concurrency and crash tests.

    python -m tests.writer_process ingest STORE PATH [--task T] [--chunk N] [--barrier DIR:N]
    python -m tests.writer_process embed STORE KEY [--chunk N] [--limit N] [--barrier DIR:N]
    python -m tests.writer_process labels STORE TASK [--chunk N] [--limit N]
    python -m tests.writer_process insert TABLE START --count N [--chunk N] [--barrier DIR:N]

`insert` puts tests.helpers.generated_rows(START..START+N) into the embedding table at TABLE (a
`<name>.lance` folder) with keyed_writes.insert_missing, N rows a commit.

`labels` inserts generated labels (tile ids l000000, l000001, ...) of TASK into the labels table by key,
--limit of them in --chunk-row commits, each commit re-sending the previous commit's rows too (kept once),
and touches STORE/.labels-started before its first commit.

--barrier DIR:N makes the process wait, just before its first commit, until N processes have reached
that point, so that their commits race for real. Faults come from EMBEDSTORE_FAULT (embedstore.core.hooks).
The report is printed as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import embedstore
from embedstore.core import hooks


def barrier(spec: str | None):
    """A write.before_commit hook that holds the first commit until N processes are there."""
    if not spec:
        return None
    folder, _, count = spec.rpartition(":")
    state = {"done": False}

    def wait(table: str, rows: int) -> None:
        if state["done"]:
            return
        state["done"] = True
        Path(folder, str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(os.listdir(folder)) < int(count):
            if time.monotonic() > deadline:
                raise TimeoutError("the other writers never arrived")
            time.sleep(0.01)

    return wait


def insert(table: Path, start: int, count: int, chunk: int) -> int:
    """Insert generated rows start..start+count in commits of `chunk`; returns how many went in."""
    import lance

    from embedstore.storage import keyed_writes
    from tests.helpers import generated_rows

    schema = lance.dataset(str(table)).schema
    name = table.name.removesuffix(".lance")
    inserted = 0
    for at in range(start, start + count, chunk):
        rows = generated_rows(schema, at, min(chunk, start + count - at))
        inserted += keyed_writes.insert_missing(table, name, rows)
    return inserted


def write_labels(store: embedstore.Store, task: str, chunk: int, count: int) -> int:
    """Generated labels of `task` in commits of `chunk` new rows, each re-sending the previous chunk."""
    import pyarrow as pa

    from embedstore.core.schema import LABELS, LABELS_SCHEMA, label_key

    Path(store.root, ".labels-started").touch()
    inserted = 0
    for start in range(0, count, chunk):
        ids = [f"l{i:06d}" for i in range(max(0, start - chunk), min(count, start + chunk))]
        rows = pa.table(
            {
                "row_key": [label_key(task, tile) for tile in ids],
                "task": [task] * len(ids),
                "tile_id": ids,
                "label": [str(int(tile[1:]) % 2) for tile in ids],
                "origin": ["import"] * len(ids),
            },
            schema=LABELS_SCHEMA,
        )
        inserted += store.catalog.insert_missing(LABELS, rows)
    return inserted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("verb", choices=["ingest", "embed", "insert", "labels"])
    parser.add_argument("store")
    parser.add_argument("what")
    parser.add_argument("--task")
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--barrier")
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    wait = barrier(args.barrier)
    hook = hooks.inject("write.before_commit", wait) if wait else contextlib.nullcontext()
    if args.verb == "insert":
        with hook:
            print(json.dumps({"inserted": insert(Path(args.store), int(args.what), args.count, args.chunk)}))
        return
    store = embedstore.open(args.store)
    with hook:
        if args.verb == "labels":
            report = {"inserted": write_labels(store, args.what, args.chunk, args.limit or 100)}
            print(json.dumps(report))
            return
        if args.verb == "ingest":
            report = store.ingest(
                [args.what], task=args.task, chunk_tiles=args.chunk, workers=1, progress=False
            )
        else:
            options = {"chunk_rows": args.chunk, "limit": args.limit, "batch_size": 8, "workers": 0}
            options["commits_by_rate"] = False  # commits of --chunk rows: the kill tests count them
            report = store.embed(args.what, progress=False, **options)
    print(json.dumps(report.to_dict(), default=str))


if __name__ == "__main__":
    main()
