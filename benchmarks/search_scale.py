"""Search at scale: the streamed IVF-PQ index (codes only, candidates re-scored exactly from the table) at
10^6 and 10^7 vectors: build time, peak memory, recall@10 against exact search, query latency, index size.

Data: 256-d float16 vectors with cluster structure (2,000 anisotropic Gaussian clusters in a 64-d latent
space, projected to 256-d, on a shared positive offset, plus isotropic noise), written into a real store:
tile rows and embedding rows are pre-filled by plain Lance appends of the store's own schemas (the
embedding table is created by embedstore's writer, so it carries its provenance). The index is then built
through `store.index(KEY, kind="ivfpq")` with embedstore's defaults, which stream the table.

Per size: build seconds, peak RSS of the build (VmHWM, reset before it), index bytes on disk and about in
memory (the manifest's `index_bytes`, `memory_bytes`) beside the bytes of the float32 vectors; recall@10
of `FaissIndex.search` (PQ candidates + exact re-scoring) on held-out queries (new vectors drawn from
the same clusters)
against the exact top-10, computed by a blocked matrix product over the table's streamed batches; one
query at a time p50/p99 latency, batch QPS, and `store.search` p50 by tile id.

Writes benchmarks/results/search_scale.json and prints a summary.

    .venv/bin/python benchmarks/search_scale.py [--sizes 1000000,10000000] [--queries 1000] [--out PATH]
        [--store-dir DIR]

--smoke: 5,000 rows of 32-d, 100 queries, a small IVF-PQ (16 lists, 8 x 4-bit codes); seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import harness
import lance
import numpy as np
import pyarrow as pa

import embedstore
from embedstore.core.schema import TILES, TILES_SCHEMA
from embedstore.embed.writer import EmbeddingWriter
from embedstore.evaluate.neighbours import BlockedTopK
from embedstore.search import IvfPqConfig
from embedstore.storage.embedding_tables import Provenance, embedding_schema, table_name

KEY = "scale.vectors"
CHUNK = 100_000  # rows generated and appended at a time
LATENT, CLUSTERS = 64, 2000


def generated(rows: int, dim: int, seed: int = 0, draw: int | None = None) -> Iterator[np.ndarray]:
    """float16 (<= CHUNK, dim) chunks of clustered vectors, `rows` in all (deterministic); `draw` other
    than None: new vectors from the same clusters (held-out queries)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(LATENT, dim)) / np.sqrt(LATENT)
    centres = rng.normal(size=(CLUSTERS, LATENT)) * 2.0
    shapes = rng.uniform(0.2, 1.0, size=(CLUSTERS, LATENT))  # anisotropic clusters
    offset = np.abs(rng.normal(size=dim)) + 1.0
    rng = rng if draw is None else np.random.default_rng(draw)
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        labels = rng.integers(0, CLUSTERS, n)
        latent = centres[labels] + shapes[labels] * rng.normal(size=(n, LATENT))
        x = latent @ basis + offset + 0.05 * rng.normal(size=(n, dim))
        yield x.astype(np.float16)


def fill_store(path: Path, rows: int, dim: int) -> embedstore.Store:
    """A store of `rows` tiles (metadata only) and their generated vectors in emb__<KEY> (view 0)."""
    store = embedstore.init(path)
    provenance = Provenance.given(KEY, dim)
    provenance = Provenance(**{**vars(provenance), "store_dtype": "float16"})
    table = table_name(KEY)
    schema = embedding_schema(provenance)
    done = 0
    for chunk in generated(rows, dim):
        ids = np.char.add("t", np.char.zfill(np.arange(done, done + len(chunk)).astype(str), 9))
        tiles = pa.table(
            {
                "tile_id": pa.array(ids),
                "source_id": pa.array(np.char.add("src", (np.arange(len(chunk)) % 100).astype(str))),
                "slide": pa.array(np.char.add("slide", (np.arange(len(chunk)) % 100).astype(str))),
            }
        )
        tiles = pa.table(
            [
                tiles.column(f.name) if f.name in tiles.column_names else pa.nulls(len(chunk), f.type)
                for f in TILES_SCHEMA
            ],
            schema=TILES_SCHEMA,
        )
        lance.write_dataset(tiles, str(store.catalog.table_path(TILES)), mode="append")
        if done == 0:  # the writer creates the table with its provenance
            EmbeddingWriter(store.catalog, table, provenance).write(
                list(ids[:1]), np.zeros(1, np.int16), chunk[:1].astype(np.float32)
            )
            ids, chunk = ids[1:], chunk[1:]
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), dim)
        keyed = pa.table(
            [
                pa.array(np.char.add(ids, ":0")),
                pa.array(ids),
                pa.array(np.zeros(len(ids), np.int16)),
                vectors,
            ],
            schema=schema,
        )
        lance.write_dataset(keyed, str(store.catalog.table_path(table)), mode="append")
        done += len(chunk) + (1 if done == 0 else 0)
    return embedstore.open(path)


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: /proc/self/clear_refs 5)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        return True
    return False


def exact_top10(store: embedstore.Store, space: Any, queries: np.ndarray) -> np.ndarray:
    """(q, 10) exact nearest index positions, by FAISS's blocked products over the table's streamed batches
    (positions in the index's order: the table's scan order, as the build reads it)."""
    top = BlockedTopK(queries, 10, space.metric)
    first = 0
    for raw, _ in store.embeddings(KEY).columns().to_numpy_batches(65_536):
        top.offer(space.prepare(raw), first)
        first += len(raw)
    return top.positions()


def measure(store: embedstore.Store, rows: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    """Build the index and measure it (see the module's docstring)."""
    config = IvfPqConfig(nlist=16, m=8, nbits=4) if args.smoke else None
    rss_before = harness.rss_bytes()
    peak_reset = reset_peak()
    started = time.perf_counter()
    manifest = store.index(KEY, kind="ivfpq", config=config)
    build_seconds = time.perf_counter() - started
    peak = harness.rss_bytes("VmHWM")
    harness.say(f"built: {manifest.summary()}")
    searcher = store.searcher(KEY, "ivfpq", update=False)
    backend, space = searcher.loaded.backend, searcher.loaded.space
    rng = np.random.default_rng(1)
    picked = np.sort(rng.choice(rows, args.queries, replace=False))  # stored rows: store.search by tile
    queries = space.prepare(next(generated(args.queries, dim, draw=1)).astype(np.float32))  # new tiles
    truth_started = time.perf_counter()
    truth = exact_top10(store, space, queries)
    truth_seconds = time.perf_counter() - truth_started
    found = backend.search(queries, 10)
    recall = float(np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)]))
    sweep = []  # held-out recall@10 at wider settings than the tuned ones
    tuned = backend.config
    for nprobe, refine in ((32, 16), (64, 16), (64, 32), (128, 32)):
        wider = dataclasses.replace(tuned, nprobe=min(nprobe, tuned.nlist), refine_factor=refine)
        backend.apply(wider)
        t0 = time.perf_counter()
        got = backend.search(queries, 10)
        seconds = time.perf_counter() - t0
        hit = float(np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(got, truth, strict=True)]))
        sweep.append(
            {
                "nprobe": wider.nprobe,
                "refine_factor": refine,
                "recall_at_10": round(hit, 4),
                "batch_qps": round(len(queries) / seconds, 1),
            }
        )
    backend.apply(tuned)
    latencies = []
    for q in queries[: args.latency_queries]:
        t0 = time.perf_counter()
        backend.search(q[None, :], 10)
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    backend.search(queries, 10)
    qps = len(queries) / (time.perf_counter() - t0)
    tiles = searcher.loaded.tile_ids[picked[:20]]
    searcher.search(tiles=[tiles[0]], k=10)  # warm-up: metadata masks
    store_latency = []
    for tile in tiles:
        t0 = time.perf_counter()
        searcher.search(tiles=[tile], k=10)
        store_latency.append(time.perf_counter() - t0)
    return {
        "rows": rows,
        "dim": dim,
        "config": manifest.config,
        "build_seconds": round(build_seconds, 2),
        "peak_rss_bytes": peak,
        "rss_before_build_bytes": rss_before,
        "peak_reset": peak_reset,
        "index_bytes": manifest.index_bytes,
        "memory_bytes": manifest.memory_bytes,
        "float32_vectors_bytes": rows * dim * 4,
        "table_recall_at_10": manifest.recall_at_10,
        "recall_at_10": round(recall, 4),
        "queries": len(queries),
        "exact_truth_seconds": round(truth_seconds, 2),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 3),
        "latency_p99_ms": round(1000 * float(np.quantile(latencies, 0.99)), 3),
        "batch_qps": round(qps, 1),
        "store_search_p50_ms": round(1000 * statistics.median(store_latency), 3),
        "wider": sweep,
    }


def print_summary(result: dict[str, Any]) -> None:
    for run in result["runs"]:
        print(
            f"{run['rows']:>10,} x {run['dim']}-d  build {run['build_seconds']:.0f} s  peak RSS "
            f"{run['peak_rss_bytes'] / 2**30:.2f} GiB  recall@10 {run['recall_at_10']:.3f}  one query "
            f"p50 {run['latency_p50_ms']:.1f} ms p99 {run['latency_p99_ms']:.1f} ms  store.search p50 "
            f"{run['store_search_p50_ms']:.1f} ms  index {run['index_bytes'] / 1e6:.0f} MB on disk, "
            f"~{run['memory_bytes'] / 1e6:.0f} MB in memory (float32 vectors: "
            f"{run['float32_vectors_bytes'] / 1e9:.2f} GB)  config {run['config']}"
        )
        for wider in run.get("wider", []):
            print(
                f"    nprobe {wider['nprobe']:>4} refine {wider['refine_factor']:>3}: recall@10 "
                f"{wider['recall_at_10']:.3f}, {wider['batch_qps']:.0f} queries/s in a batch"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--sizes", default="1000000", help="comma-separated table sizes")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument(
        "--store-dir", type=Path, default=None, help="where the stores go [a temporary folder]"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path [results/search_scale.json]")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.dim, args.queries, args.latency_queries = "5000", 32, 100, 20
    out = args.out or harness.RESULTS / "search_scale.json"
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": harness.machine(),
        "args": vars(args),
        "runs": [],
    }
    for rows in [int(s) for s in args.sizes.split(",") if s.strip()]:
        with harness.scratch("search-scale-") if args.store_dir is None else _kept(args.store_dir) as tmp:
            harness.say(f"writing {rows:,} x {args.dim}-d float16 vectors into a store")
            started = time.perf_counter()
            store = fill_store(tmp / f"store-{rows}", rows, args.dim)
            harness.say(f"written in {time.perf_counter() - started:.0f} s; building the index")
            result["runs"].append(measure(store, rows, args.dim, args))
            harness.write_json(out, result)
    print_summary(result)
    print(json.dumps({"written": str(out)}))
    return 0


@contextlib.contextmanager
def _kept(folder: Path) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    yield folder


if __name__ == "__main__":
    raise SystemExit(main())
