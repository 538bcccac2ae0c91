"""Reading at scale: do scans of an embedding table keep their rate as the table grows from 10^5 to 10^7 rows?

A store is grown to each --sizes size: a tiles table of generated tiles (metadata only, no pixels, a
`dataset` and `split` per tile) and an `emb__` table of 256-d float16 vectors for them, both written with
plain Lance appends. At each size it times, through the product's read path (`embedstore.embeddings`):
  ids:        `EmbeddingTable.tile_ids()`, the ids-only read that plans and staleness checks use;
  ids_views:  `EmbeddingTable.to_batches(("tile_id", "view"))`, streamed;
  vectors:    `EmbeddingTable.to_batches(("vector",))`, the raw vectors streamed;
  query:      `EmbeddingQuery.to_numpy_batches()`, vectors joined with the tiles' metadata, streamed;
  query_where: the same with `where("split = 'train'")` (half the tiles);
rows/s of each (rows of the table per second), the peak RSS the process reached, and how each rate
compares with the smallest size's (flat = about 1). Target (issue #24): rates flat in table size.

    python benchmarks/scale_reads.py [--sizes 100000,1000000,10000000]
    python benchmarks/scale_reads.py --smoke     # seconds: 2,000 rows

10^7 rows take ~6 GB of disk in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import harness
import lance
import numpy as np
import pyarrow as pa

import embedstore
from embedstore.core.schema import TILES, TILES_SCHEMA
from embedstore.embeddings import EmbeddingQuery, EmbeddingTable
from embedstore.storage.embedding_tables import embedding_schema, table_name

RESULTS = harness.RESULTS / "scale_reads.json"
DIM = 256
FILL_ROWS = 500_000
BACKBONE = "scale_bench"
PROVENANCE = dataclasses.replace(harness.bench_provenance(DIM), backbone=BACKBONE)


def parse_args(argv: Sequence[str] | None) -> Any:
    parser = harness.parser(__doc__)
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="table sizes, comma-separated")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = "1000,2000"
    return args


def tiles_rows(start: int, count: int) -> pa.Table:
    """`count` generated tiles (metadata only), ids from `start`."""
    ids = [f"g{i:010d}" for i in range(start, start + count)]
    index = np.arange(start, start + count)
    columns: dict[str, Any] = {field.name: pa.nulls(count, field.type) for field in TILES_SCHEMA}
    columns.update(
        tile_id=pa.array(ids),
        source_id=pa.array([f"slide{i // 20_000}" for i in index]),
        x=pa.array((index % 141) * 256),
        y=pa.array((index // 141 % 141) * 256),
        level=pa.array(np.zeros(count, np.int32)),
        size0=pa.array(np.full(count, 256)),
        width=pa.array(np.full(count, 256, np.int32)),
        height=pa.array(np.full(count, 256, np.int32)),
        dataset=pa.array(["cohort"] * count),
        split=pa.array(np.where(index % 2 == 0, "train", "test").astype(object)),
    )
    return pa.table([columns[f.name] for f in TILES_SCHEMA], schema=TILES_SCHEMA)


def vector_rows(start: int, count: int, rng: np.random.Generator) -> pa.Table:
    return harness.embedding_rows(PROVENANCE, start, count, rng, digits=10)


def grow(store: embedstore.Store, have: int, size: int, rng: np.random.Generator) -> None:
    """Append tiles and their vectors from `have` to `size` rows."""
    tiles = store.catalog.table_path(TILES)
    vectors = store.catalog.table_path(table_name(BACKBONE))
    for start in range(have, size, FILL_ROWS):
        count = min(FILL_ROWS, size - start)
        lance.write_dataset(tiles_rows(start, count), str(tiles), mode="append")
        lance.write_dataset(vector_rows(start, count, rng), str(vectors), mode="append")


def rows_in(batches: Iterator[Any]) -> int:
    return sum(batch.num_rows if hasattr(batch, "num_rows") else batch.batch.num_rows for batch in batches)


def timed(read: Callable[[], int]) -> dict[str, float]:
    started = time.perf_counter()
    rows = read()
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def measure(store: embedstore.Store) -> dict[str, Any]:
    table = EmbeddingTable.of(store, BACKBONE)
    query = EmbeddingQuery.of(store, BACKBONE)
    reads: dict[str, Callable[[], int]] = {
        "ids": lambda: len(table.tile_ids()),
        "ids_views": lambda: rows_in(table.to_batches(("tile_id", "view"))),
        "vectors": lambda: rows_in(table.to_batches(("vector",))),
        "query": lambda: rows_in(query.to_numpy_batches()),
        "query_where": lambda: rows_in(query.where("split = 'train'").to_numpy_batches()),
    }
    return {name: timed(read) for name, read in reads.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": harness.machine(),
        "args": vars(args),
        "sizes": [],
    }
    rng = np.random.default_rng(0)
    with harness.scratch("scale-reads-") as tmp:
        store = embedstore.init(tmp / "store")
        store.catalog.create_table(table_name(BACKBONE), embedding_schema(PROVENANCE))
        have = 0
        for size in sizes:
            harness.say(f"growing the store to {size:,} tiles")
            grow(store, have, size, rng)
            have = size
            harness.say(f"reading {size:,} rows")
            entry = {"rows": size, "reads": measure(store), "peak_rss_bytes": harness.rss_bytes("VmHWM")}
            result["sizes"].append(entry)
            harness.write_json(args.out, result)
    first = result["sizes"][0]["reads"]
    names = list(first)
    print(f"\n{'rows':>12} " + " ".join(f"{name + ' rows/s':>22}" for name in names) + f" {'peak RSS':>10}")
    for entry in result["sizes"]:
        cells = []
        for name in names:
            found = entry["reads"][name]
            entry["reads"][name]["vs_smallest"] = found["rows_per_s"] / first[name]["rows_per_s"]
            cells.append(f"{found['rows_per_s']:>13,.0f} ({found['vs_smallest']:.2f})")
        rss = entry["peak_rss_bytes"] / 2**30
        print(f"{entry['rows']:>12,} " + " ".join(f"{cell:>22}" for cell in cells) + f" {rss:>8.1f} G")
    print("(in brackets: the rate as a share of the smallest table's; flat is about 1)")
    harness.write_json(args.out, result)
    harness.say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
