"""Similarity-search benchmark: embedstore's FAISS indexes against NumPy brute force, the memory-bandwidth
bound and LanceDB's own vector index, end to end through `store.search`; and retrieval quality on real
embeddings (raw vs centred cosine, mean vs rrf fusion, with and without negatives).

Speed (per dataset and size, 384-d, every index built through `store.index(...)` and tuned by embedstore
to recall@10 >= 0.95 on its own sample):
  data: "synthetic" = 1000 anisotropic Gaussian clusters (64-d latent shape + isotropic noise) on a
      shared positive offset; "real" = the PCam + AMi-Br tf_efficientnet_lite0 vectors (1280-d) projected
      to 384-d by a fixed random orthogonal matrix (seed 0), tiled up to the size with Gaussian noise.
      Each lives in its own store under benchmarks/results/search-stores/ (1000 slides, 2 datasets), so
      `store.search` runs for real: index, metadata, filters;
  queries: held-out = stored vectors + small Gaussian noise; truth = exact top-10 in the index's space;
  per index: build seconds, index bytes on disk, peak RSS growth while building, the tuned config,
      recall@10 of the raw index on the held-out queries, single-query p50/p99 (one query at a time,
      FAISS with its default OpenMP threads, and FAISS with 1 thread), batch QPS, and `store.search`
      p50/p99 by tile id, plain and with filters (exclude_query_slides + where), after a warm-up;
  NumPy brute force (`vectors @ q` + argpartition) and the memory-bandwidth bound (bytes of the
      vectors / read bandwidth measured in the same run).
Quality (real data, full 1280-d, exact flat indexes): PCam with positives subsampled to 5 % prevalence
and AMi-Br Atypical (22 %); 20 draws of 5 query positives; precision@50/@200 for fusion mean/rrf x raw /
centred cosine x without / with 5 random negatives.

Writes benchmarks/results/search.json, benchmarks/results/search_recall_latency.png and prints a summary.

    .venv/bin/python benchmarks/search.py [--sizes 100000,1000000] [--queries 1000] [--quick]
        [--skip-real | --require-real] [--real-store PATH] [--out PATH] [--resume] [--report]

--resume keeps what --out already holds (the JSON is saved after every index) and measures the rest;
--report re-evaluates the targets, re-plots and re-prints from --out without measuring. The full run
takes about 50 minutes on 2 cores; stores are cached under search-stores/ between runs.

--smoke: 2,000 synthetic rows, 50 queries, the flat, ivf and hnsw indexes (PQ and LanceDB builds take
tens of seconds at any size), and the quality part on generated 64-d vectors (two classes, PCam- and
AMi-Br-shaped) with 2 draws; stores in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import harness
import numpy as np
import pyarrow as pa

import embedstore
from embedstore.core.schema import TILES, TILES_SCHEMA
from embedstore.embed.writer import EmbeddingWriter
from embedstore.evaluate.neighbours import exact_neighbours
from embedstore.evaluate.space import VectorSpace
from embedstore.search import faiss_index
from embedstore.search.recall import recall_at_k
from embedstore.storage.embedding_tables import Provenance, table_name

DATA = harness.DATA
RESULTS = harness.RESULTS
STORES = RESULTS / "search-stores"
LITE0 = "tf_efficientnet_lite0.in1k"
KEY = "bench.search384"  # backbone key of the speed stores' embedding table
QUALITY_KEY = "bench.lite0"  # backbone key of the quality stores' (full 1280-d lite0 vectors)
DIM = 384
SLIDES = 1000
CHUNK = 100_000  # rows per insert when writing a store
K = 10
GENERATOR_VERSION = 1  # bump when the data generators change (invalidates cached stores)

# (index name, store.index keyword arguments)
INDEXES: list[tuple[str, dict[str, Any]]] = [
    ("flat", dict(kind="flat")),
    ("ivf", dict(kind="ivf")),
    ("hnsw", dict(kind="hnsw")),
    ("ivfpq", dict(kind="ivfpq")),
    ("lance-ivfpq", dict(kind="ivfpq", backend="lancedb")),
    ("lance-hnsw", dict(kind="hnsw", backend="lancedb")),
]
TARGET_RECALL = 0.95
TARGET_VS_NUMPY = 50.0  # (i) an index with recall >= 0.95 answers a query >= 50x faster than NumPy
TARGET_VS_LANCE = 5.0  # (ii) at recall >= 0.95, >= 5x lower p50 than LanceDB's own index
TARGET_E2E_VS_EXACT = 20.0  # (iii) store.search with filters >= 20x faster than exact brute force
TARGET_FLAT_VS_BOUND = 1.5  # (iv) FAISS flat within 1.5x the memory-bandwidth bound
TARGET_QUALITY = 5.0  # precision@200 >= 5x prevalence on PCam at 5 %
WHERE = "dataset = 'cohort0'"  # half of the tiles (slides alternate between two datasets)
QUERY_NOISE = 0.05  # held-out query = stored vector + noise of this x the table's per-dimension std
QUALITY_DRAWS = 20
QUALITY_POSITIVES = 5
QUALITY_NEGATIVES = 5
PCAM_PREVALENCE = 0.05


# -- process memory ---------------------------------------------------------------------------------------


def release_memory() -> None:
    """Give freed memory back to the OS (Python, glibc malloc, Arrow's pool), so RSS growth measured
    next is not hidden by memory an earlier phase freed but the allocators kept."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRss:
    """Peak resident memory while a block runs, above the RSS when it began: Linux's high-water mark
    (reset through /proc/self/clear_refs), else a sampling thread."""

    def __enter__(self) -> PeakRss:
        release_memory()
        self.start = harness.rss_bytes("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm = harness.rss_bytes("VmHWM") <= self.start + (64 << 20)
        except OSError:
            self.hwm = False
        self.sampled, self._stop = self.start, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.sampled = max(self.sampled, harness.rss_bytes("VmRSS"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        peak = max(self.sampled, harness.rss_bytes("VmHWM") if self.hwm else 0)
        self.growth = max(0, peak - self.start)
        self.method = "VmHWM after clear_refs" if self.hwm else "VmRSS sampled every 20 ms"


# -- timing -----------------------------------------------------------------------------------------------


def timings(fn: Callable[[Any], Any], items: list[Any] | np.ndarray, warmup: int = 10) -> np.ndarray:
    """Seconds of fn(item) for each item, one at a time, after `warmup` untimed calls."""
    for item in items[:warmup]:
        fn(item)
    out = np.empty(len(items))
    for i, item in enumerate(items):
        started = time.perf_counter()
        fn(item)
        out[i] = time.perf_counter() - started
    return out


def latency(seconds: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(seconds, 50)) * 1e3, 4),
        "p99_ms": round(float(np.percentile(seconds, 99)) * 1e3, 4),
        "mean_ms": round(float(seconds.mean()) * 1e3, 4),
        "queries": len(seconds),
    }


def best_of(fn: Callable[[], Any], repeats: int = 5) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def memory_bandwidth(gib: float = 2.0) -> dict[str, Any]:
    """Read bandwidth over a float32 array of >= `gib` GiB: best of 5 of a single-threaded reduction
    (np.add.reduce) and of a matrix-vector product (OpenBLAS sgemv, its default threads); the higher is
    the bound used (the tighter one)."""
    rows = int(math.ceil(gib * 2**30 / (4 * DIM)))
    array = np.ones((rows, DIM), dtype=np.float32)  # written once, so every page is resident
    vector = np.ones(DIM, dtype=np.float32)
    seconds_sum = best_of(lambda: np.add.reduce(array.reshape(-1)))
    seconds_dot = best_of(lambda: array @ vector)
    nbytes = array.nbytes
    rates = {"np.add.reduce": nbytes / seconds_sum, "sgemv (array @ vector)": nbytes / seconds_dot}
    method = max(rates, key=lambda k: rates[k])
    return {
        "array_bytes": nbytes,
        "gb_per_s": {k: round(v / 1e9, 2) for k, v in rates.items()},
        "used": method,
        "bytes_per_s": rates[method],
    }


# -- stores of given vectors ------------------------------------------------------------------------------


def tiles_table(ids: list[str], rows: np.ndarray, per_slide: int) -> pa.Table:
    """TILES rows without pixels: `per_slide` consecutive tiles per slide, slides alternating between
    datasets cohort0 / cohort1."""
    slide = rows // per_slide
    within = rows % per_slide
    columns = {
        "tile_id": pa.array(ids, pa.string()),
        "source_id": pa.array([f"src{s:04d}" for s in slide], pa.string()),
        "x": pa.array(224 * (within % 128), pa.int64()),
        "y": pa.array(224 * (within // 128), pa.int64()),
        "level": pa.array(np.zeros(len(ids), np.int32)),
        "size0": pa.array(np.full(len(ids), 224, np.int64)),
        "width": pa.array(np.full(len(ids), 224, np.int32)),
        "height": pa.array(np.full(len(ids), 224, np.int32)),
        "slide": pa.array([f"slide{s:04d}" for s in slide], pa.string()),
        "dataset": pa.array([f"cohort{s % 2}" for s in slide], pa.string()),
    }
    arrays = [columns.get(f.name, pa.nulls(len(ids), f.type)) for f in TILES_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=TILES_SCHEMA)


def write_store(
    path: Path,
    key: str,
    dim: int,
    rows: int,
    chunks: Iterator[np.ndarray],
    ids: Callable[[int, int], list[str]],
) -> embedstore.Store:
    """A fresh store at `path` whose tiles (metadata only) carry the vectors of `chunks` in `emb__<key>`,
    written in chunks (tiles, then their vectors) so memory stays bounded."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = embedstore.init(path)
    provenance = Provenance.given(key, dim)
    writer = EmbeddingWriter(store.catalog, table_name(key), provenance)
    per_slide = max(1, math.ceil(rows / SLIDES))
    start = 0
    for vectors in chunks:
        n = len(vectors)
        chunk_ids = ids(start, n)
        store.catalog.insert_missing(TILES, tiles_table(chunk_ids, np.arange(start, start + n), per_slide))
        writer.write(chunk_ids, np.zeros(n, np.int16), vectors)
        start += n
    return store


def cached_store(
    path: Path, meta: dict[str, Any], key: str, dim: int, chunks: Callable[[], Iterator[np.ndarray]]
) -> tuple[embedstore.Store, bool, float]:
    """The store at `path` when it was written with the same `meta`, else a new one; (store, reused, s)."""
    marker = path.with_suffix(".json")
    if path.is_dir() and marker.is_file() and json.loads(marker.read_text()) == meta:
        store = embedstore.open(path)
        if store.embeddings(key).count() == meta["rows"]:
            return store, True, 0.0
    started = time.perf_counter()
    marker.unlink(missing_ok=True)
    store = write_store(
        path, key, dim, meta["rows"], chunks(), lambda s, n: [f"t{i:07d}" for i in range(s, s + n)]
    )
    marker.write_text(json.dumps(meta))
    return store, False, time.perf_counter() - started


# -- data -------------------------------------------------------------------------------------------------


class Synthetic:
    """Clustered 384-d vectors like real embeddings: a shared positive offset (the common component),
    1000 cluster centres, each cluster with its own anisotropic shape in a shared 64-d latent subspace,
    plus a little isotropic noise. Chunks are deterministic per (seed, chunk number)."""

    name = "synthetic"

    def __init__(self, dim: int = DIM, clusters: int = 1000, latent: int = 64, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        self.offset = (2.0 + np.abs(rng.normal(size=dim))).astype(np.float32)
        self.centres = rng.normal(size=(clusters, dim)).astype(np.float32)
        self.basis = np.linalg.qr(rng.normal(size=(dim, latent)))[0].T.astype(np.float32)  # orthonormal rows
        self.scales = rng.uniform(0.3, 2.5, size=(clusters, latent)).astype(np.float32)
        self.noise = 0.15
        self.description = (
            f"{clusters} clusters: offset 2+|N(0,1)| per dim, centres N(0,1), within-cluster N(0, s^2) in a "
            f"shared {latent}-d orthonormal latent subspace with per-cluster scales s ~ U(0.3, 2.5), plus "
            f"N(0, {self.noise}^2) isotropic noise; seed {seed}"
        )

    def meta(self, rows: int) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "rows": rows,
            "dim": self.dim,
            "seed": self.seed,
            "v": GENERATOR_VERSION,
        }

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        for number, start in enumerate(range(0, rows, CHUNK)):
            n = min(CHUNK, rows - start)
            rng = np.random.default_rng([self.seed, 1, number])
            labels = rng.integers(0, len(self.centres), n)
            latent = rng.standard_normal((n, self.basis.shape[0]), dtype=np.float32) * self.scales[labels]
            x = latent @ self.basis
            x += self.offset
            x += self.centres[labels]
            x += self.noise * rng.standard_normal((n, self.dim), dtype=np.float32)
            yield x


class RealTiled:
    """Real lite0 vectors projected to 384-d (random orthogonal matrix, seed 0) and tiled up to the size:
    row i = base[order[i mod n]] + N(0, sigma^2) per dimension, sigma = 0.5 x the median L2 distance of a
    base vector to its nearest other base vector / sqrt(384), so each copy lies about half-way to its
    real neighbours."""

    name = "real"

    def __init__(self, vectors: np.ndarray, sources: str, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        projection = np.linalg.qr(rng.standard_normal((vectors.shape[1], DIM)))[0].astype(np.float32)
        self.base = np.ascontiguousarray(vectors @ projection, dtype=np.float32)
        self.order = rng.permutation(len(self.base))
        sample = self.base[rng.choice(len(self.base), min(2000, len(self.base)), replace=False)]
        distances, _ = faiss.knn(sample, self.base, 2, metric=faiss.METRIC_L2)
        self.nn_median = float(np.median(np.sqrt(np.maximum(distances[:, 1], 0))))
        self.sigma = 0.5 * self.nn_median / math.sqrt(DIM)
        self.seed, self.dim = seed, DIM
        self.description = (
            f"{len(self.base)} real {sources} tf_efficientnet_lite0 vectors ({vectors.shape[1]}-d) x a "
            f"random orthogonal {vectors.shape[1]}x{DIM} matrix (QR of N(0,1), seed {seed}), tiled: row i = "
            f"base[perm[i mod {len(self.base)}]] + N(0, sigma^2), sigma = 0.5 x median NN L2 distance "
            f"({self.nn_median:.3f}) / sqrt({DIM}) = {self.sigma:.4f}"
        )

    def meta(self, rows: int) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "rows": rows,
            "dim": self.dim,
            "seed": self.seed,
            "base_rows": len(self.base),
            "base_checksum": round(float(self.base[:, :8].sum()), 3),
            "v": GENERATOR_VERSION,
        }

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        for number, start in enumerate(range(0, rows, CHUNK)):
            n = min(CHUNK, rows - start)
            rng = np.random.default_rng([self.seed, 2, number])
            picks = self.order[np.arange(start, start + n) % len(self.base)]
            yield self.base[picks] + self.sigma * rng.standard_normal((n, self.dim), dtype=np.float32)


# -- real embeddings --------------------------------------------------------------------------------------


def positive_label(labels: np.ndarray, task: str) -> str:
    present = set(labels.astype(str).tolist())
    for candidate in ("1", "Atypical", "True", "atypical", "tumor", "positive"):
        if candidate in present:
            return candidate
    raise SystemExit(f"task {task!r}: cannot tell the positive label among {sorted(present)}")


def real_store(path: Path) -> tuple[embedstore.Store | None, str]:
    """The store of real lite0 embeddings (PCam task `pcam`, AMi-Br task `amibr`), built at `path` from
    ../shared/data when missing; (None, why) when it cannot be had."""
    if path.is_dir():
        store = embedstore.open(path)
        try:
            store.embeddings(LITE0).task("pcam").count()
            store.embeddings(LITE0).task("amibr").count()
            return store, f"existing store {path}"
        except Exception as error:  # noqa: BLE001 - say what is missing, then fall through to a rebuild
            harness.say(f"real store {path} is not usable ({str(error).splitlines()[0]}); rebuilding it")
    pcam, amibr = DATA / "pcam", DATA / "ami_br" / "AMi-Br"
    if not (pcam.is_dir() and amibr.is_dir()):
        return None, (
            f"the real part needs {pcam} (ImageFolder) and {amibr} (Atypical/ Normal/ folders) from "
            f"../shared/data (see its README), or an existing store with {LITE0} embeddings and tasks "
            "'pcam' and 'amibr' given with --real-store"
        )
    from embedstore import IngestOptions

    if path.exists():
        shutil.rmtree(path)
    harness.say(
        f"building the real store at {path}: ingest PCam + AMi-Br, embed with {LITE0} (minutes on CPU)"
    )
    started = time.perf_counter()
    store = embedstore.init(path)
    store.ingest([pcam], IngestOptions(kind="imagefolder", task="pcam", mpp=0.97, progress=False))
    store.ingest([amibr], IngestOptions(kind="imagefolder", task="amibr", progress=False))
    store.embed(LITE0, progress=False)
    return store, f"built {path} in {time.perf_counter() - started:.0f} s"


def real_vectors(store: embedstore.Store) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """task -> (X, tile_ids, labels, positive label) for pcam and amibr."""
    out = {}
    for task in ("pcam", "amibr"):
        x, ids, labels = store.embeddings(LITE0).task(task).to_numpy()
        assert labels is not None
        labels = labels.astype(str)
        out[task] = (x, ids.astype(str), labels, positive_label(labels, task))
    return out


# -- speed ------------------------------------------------------------------------------------------------


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def short_config(config: dict[str, Any]) -> str:
    """The settings that matter, abbreviated (efC/efS: HNSW construction/search breadth, rf: refine)."""
    names = {
        "index_type": "",
        "nlist": "nlist",
        "num_partitions": "parts",
        "m": "m",
        "num_sub_vectors": "sub",
        "ef_construction": "efC",
        "ef_search": "efS",
        "nprobe": "nprobe",
        "nprobes": "nprobe",
        "refine_factor": "rf",
    }
    parts = []
    for key, short in names.items():
        value = config.get(key)
        if value is None or (key == "num_sub_vectors" and config.get("index_type") != "IVF_PQ"):
            continue
        parts.append(f"{short}={value}" if short else str(value))
    return " ".join(parts)


def numpy_top(prepared: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    scores = prepared @ query
    top = np.argpartition(scores, -k)[-k:]
    return top[np.argsort(-scores[top])]


def numpy_brute_force(
    prepared: np.ndarray, queries: np.ndarray, truth: np.ndarray, count: int, bound: float
) -> dict[str, Any]:
    """NumPy exact search, one query at a time: latency, recall (on the first 100), ratio to the bound."""
    seconds = timings(lambda q: numpy_top(prepared, q), list(queries[:count]))
    found = np.stack([numpy_top(prepared, q) for q in queries[: min(count, 100)]])
    p50 = float(np.percentile(seconds, 50))
    return {
        "method": "prepared @ q (OpenBLAS sgemv, default threads) + argpartition + sort of the top 10",
        "latency": latency(seconds),
        "recall_at_10": round(recall_at_k(found, truth[: len(found)]), 4),
        "vs_bound": round(p50 / bound, 3),
    }


REUSE_INDEXES = False  # --reuse-indexes


def measure_index(
    store_path: Path,
    name: str,
    kwargs: dict[str, Any],
    queries: np.ndarray,
    truth: np.ndarray,
    query_tiles: list[str],
    mean: np.ndarray | None,
    latency_queries: int,
) -> dict[str, Any]:
    """Build one index through store.index, then measure it raw (backend) and end to end (store.search)."""
    store = embedstore.open(store_path)
    backend_name = kwargs.get("backend", "faiss")
    existing = {m.name: m for m in store.indexes(KEY)} if REUSE_INDEXES else {}
    if name in existing:  # --reuse-indexes: measure searches again without rebuilding (build figures kept)
        harness.say(f"  {name}: reusing the index built before")
        manifest = existing[name]
        rss = PeakRss()
        rss.growth, rss.method = 0, "not measured (index reused)"
    else:
        harness.say(f"  {name}: building ({backend_name} {kwargs['kind']})")
        with PeakRss() as rss:
            manifest = store.index(KEY, name=name, **kwargs)
    directory = store.root / "indexes" / manifest.table / name
    record: dict[str, Any] = {
        "name": name,
        "backend": manifest.backend,
        "kind": manifest.kind,
        "build_seconds": manifest.build_seconds,
        "tuned_recall_at_10": manifest.recall_at_10,
        "tuned_recall_queries": manifest.recall_queries,
        "config": manifest.config,
        "index_bytes": dir_bytes(directory),
        "build_rss_growth_bytes": rss.growth,
        "rss_method": rss.method,
        "load_average": os.getloadavg(),
    }
    harness.say(
        f"  {name}: built in {manifest.build_seconds:.1f} s, tuned recall@10 {manifest.recall_at_10}, "
        f"{short_config(manifest.config)}, {record['index_bytes'] / 2**20:.0f} MiB, "
        f"+{rss.growth / 2**20:.0f} MiB RSS"
    )
    del store
    gc.collect()

    # end to end: a fresh Store object; the first search loads the index and the tiles' metadata
    store = embedstore.open(store_path)
    started = time.perf_counter()
    store.search(KEY, tiles=[query_tiles[0]], index=name, k=K)
    load_seconds = time.perf_counter() - started
    loaded = store.searcher(KEY, name).loaded
    if (mean is None) != (loaded.space.mean is None) or (
        mean is not None and not np.allclose(mean, loaded.space.mean, atol=1e-6)
    ):
        raise SystemExit(f"index {name}: its centring vector differs from the table mean computed here")
    backend = loaded.backend

    started = time.perf_counter()
    found = backend.search(queries, K)
    batch_seconds = time.perf_counter() - started
    record["recall_at_10"] = round(recall_at_k(found, truth), 4)
    record["batch"] = {
        "queries": len(queries),
        "seconds": round(batch_seconds, 3),
        "qps": round(len(queries) / batch_seconds, 1),
        "note": "LanceIndex.search answers one query at a time" if backend_name == "lancedb" else "",
    }
    single = list(queries[:latency_queries, None, :])
    record["latency"] = latency(timings(lambda q: backend.search(q, K), single))
    record["latency"]["threads"] = (
        f"embedstore's choice: 1 OpenMP thread below {faiss_index.PARALLEL_FROM} queries"
        if backend_name == "faiss"
        else "lance default"
    )
    if backend_name == "faiss":
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            record["latency_1_thread"] = latency(timings(lambda q: backend.search(q, K), single))
        finally:
            faiss.omp_set_num_threads(threads)
    harness.say(
        f"  {name}: recall@10 {record['recall_at_10']:.4f}, p50 {record['latency']['p50_ms']:.3f} ms, "
        f"p99 {record['latency']['p99_ms']:.3f} ms"
        + (
            f", 1 thread p50 {record['latency_1_thread']['p50_ms']:.3f} ms"
            if "latency_1_thread" in record
            else ""
        )
        + f", batch {record['batch']['qps']:.0f} q/s"
    )

    tiles = query_tiles[:latency_queries]
    plain = timings(lambda t: store.search(KEY, tiles=[t], index=name, k=K), tiles)
    started = time.perf_counter()
    store.search(KEY, tiles=[tiles[0]], index=name, k=K, exclude_query_slides=True, where=WHERE)
    first_filtered = time.perf_counter() - started
    filtered_hits = store.search(
        KEY, tiles=[tiles[1]], index=name, k=K, exclude_query_slides=True, where=WHERE
    ).hits
    filtered = timings(
        lambda t: store.search(KEY, tiles=[t], index=name, k=K, exclude_query_slides=True, where=WHERE), tiles
    )
    record["end_to_end"] = {
        "load_seconds": round(load_seconds, 3),
        "plain": latency(plain),
        "filtered": {
            **latency(filtered),
            "first_call_seconds": round(first_filtered, 4),
            "filters": f"exclude_query_slides=True, where={WHERE!r}",
            "hits_ok": bool(
                len(filtered_hits) == K and set(filtered_hits["dataset"].to_list()) == {"cohort0"}
            ),
        },
    }
    e2e = record["end_to_end"]
    harness.say(
        f"  {name}: store.search load {load_seconds:.2f} s, p50 {e2e['plain']['p50_ms']:.2f} ms, "
        f"filtered p50 {e2e['filtered']['p50_ms']:.2f} ms (p99 {e2e['filtered']['p99_ms']:.2f})"
    )
    return record


def run_speed(
    data: Synthetic | RealTiled,
    rows: int,
    args: argparse.Namespace,
    index_names: list[str],
    previous: dict[str, Any] | None,
    checkpoint: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """One dataset at one size: store, queries and truth, bandwidth bound, NumPy, then each index (saved
    through `checkpoint` after each). `previous`: a partial record of this run to resume (its indexes,
    bandwidth and NumPy measurements are kept)."""
    path = args.stores / f"{data.name}-{rows}"
    harness.say(f"{data.name} x {rows}: store {path}")
    store, reused, write_seconds = cached_store(path, data.meta(rows), KEY, DIM, lambda: data.chunks(rows))
    harness.say(f"{data.name} x {rows}: store {'reused' if reused else f'written in {write_seconds:.1f} s'}")
    result: dict[str, Any] = {
        "dataset": data.name,
        "rows": rows,
        "dim": DIM,
        "data": data.description,
        "store": str(path),
        "store_reused": reused,
        "store_write_seconds": round(write_seconds, 1),
        "slides": SLIDES,
        "indexes": [],
        "skipped": [],
        "load_average_start": os.getloadavg(),
    }
    previous = previous or {}
    if previous.get("indexes"):
        result["indexes"] = list(previous["indexes"])
        result["resumed_indexes"] = [r["name"] for r in previous["indexes"]]
        result["load_average_start"] = previous.get("load_average_start")
    del store
    gc.collect()
    raw, tile_ids, _ = embedstore.open(path).embeddings(KEY).to_numpy()
    # the space every index builds (cosine, centred on the table's mean): prepared vectors and truth live in
    # it; each index's own mean is checked against this one
    space = VectorSpace.fit("cosine", True, raw)
    mean = space.mean
    tile_ids = tile_ids.astype(str)
    rng = np.random.default_rng(7)
    query_rows = rng.choice(rows, args.queries, replace=False)
    sample = raw[rng.choice(rows, min(rows, 50_000), replace=False)]
    std = float(np.sqrt(sample.var(axis=0).mean()))
    raw_queries = raw[query_rows] + QUERY_NOISE * std * rng.standard_normal((args.queries, DIM)).astype(
        np.float32
    )
    queries = space.prepare(raw_queries)
    prepared = space.prepare(raw)
    del raw, sample
    gc.collect()
    started = time.perf_counter()
    truth = exact_neighbours(prepared, queries, "cosine", K)
    result["queries"] = {
        "count": args.queries,
        "latency_queries": min(args.latency_queries, args.queries),
        "kind": f"held out: stored rows + N(0, ({QUERY_NOISE} x per-dim std {std:.4f})^2) noise",
        "truth": "exact top-10 (faiss.knn, inner product on prepared = centred unit vectors)",
        "truth_seconds": round(time.perf_counter() - started, 2),
        "source_row_in_own_top10": round(
            float(np.mean([r in t for r, t in zip(query_rows, truth, strict=True)])), 4
        ),
    }
    lat_n = min(args.latency_queries, args.queries)

    if previous.get("bandwidth") and previous.get("numpy"):
        result["bandwidth"], result["numpy"] = previous["bandwidth"], previous["numpy"]
        bound = result["bandwidth"]["bound_ms"] / 1e3
    else:
        harness.say(f"{data.name} x {rows}: memory bandwidth")
        bandwidth = memory_bandwidth(args.bandwidth_gib)
        bound = prepared.nbytes / bandwidth["bytes_per_s"]
        result["bandwidth"] = {
            **bandwidth,
            "vectors_bytes": prepared.nbytes,
            "bound_ms": round(bound * 1e3, 3),
        }
        harness.say(
            f"  read bandwidth {bandwidth['gb_per_s']} GB/s; bound for {prepared.nbytes / 1e9:.2f} GB of "
            f"vectors: {bound * 1e3:.2f} ms"
        )
        result["numpy"] = numpy_brute_force(prepared, queries, truth, lat_n, bound)
    checkpoint(result)
    harness.say(
        f"  numpy brute force p50 {result['numpy']['latency']['p50_ms']:.2f} ms, "
        f"{result['numpy']['vs_bound']:.2f}x the bound"
    )
    del prepared
    gc.collect()

    query_tiles = [str(t) for t in tile_ids[query_rows]]
    del tile_ids
    done = {r["name"] for r in result["indexes"]}
    for name in index_names:
        spec = dict(INDEXES)[name]
        if name in done:
            harness.say(f"  {name}: measured before (resumed)")
            continue
        if name == "lance-hnsw" and rows > args.lance_hnsw_max_rows:
            result["skipped"].append(
                {"name": name, "why": f"rows {rows} > --lance-hnsw-max-rows {args.lance_hnsw_max_rows}"}
            )
            continue
        try:
            record = measure_index(path, name, spec, queries, truth, query_tiles, mean, lat_n)
        except Exception as error:  # noqa: BLE001 - record it and go on with the other indexes
            traceback.print_exc()
            result["skipped"].append({"name": name, "why": f"{type(error).__name__}: {error}"})
            continue
        if name == "flat":
            record["vs_bound"] = round(record["latency"]["p50_ms"] / (bound * 1e3), 3)
            record["vs_bound_1_thread"] = round(record["latency_1_thread"]["p50_ms"] / (bound * 1e3), 3)
        result["indexes"].append(record)
        checkpoint(result)
        gc.collect()
    return result


# -- targets ----------------------------------------------------------------------------------------------


def describe(record: dict[str, Any]) -> str:
    return f"{record['name']} {record['latency']['p50_ms']:.3f} ms (recall {record['recall_at_10']:.3f})"


def evaluate_targets(speed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The four speed targets at the largest size of each dataset."""
    out = []
    for dataset in sorted({r["dataset"] for r in speed}, key=lambda d: d != "synthetic"):
        runs = [r for r in speed if r["dataset"] == dataset]
        run = max(runs, key=lambda r: r["rows"])
        where = f"{dataset} x {run['rows']}"
        numpy_p50 = run["numpy"]["latency"]["p50_ms"]
        indexes = {r["name"]: r for r in run["indexes"]}
        good = [r for r in run["indexes"] if r["recall_at_10"] >= TARGET_RECALL and r["kind"] != "flat"]
        good_faiss = [r for r in good if r["backend"] == "faiss"]
        best = min(good_faiss, key=lambda r: r["latency"]["p50_ms"]) if good_faiss else None
        if best:
            speedup = numpy_p50 / best["latency"]["p50_ms"]
            out.append(
                {
                    "target": f"(i) recall@10 >= {TARGET_RECALL} and p50 >= {TARGET_VS_NUMPY:g}x faster than "
                    "NumPy brute force",
                    "where": where,
                    "pass": speedup >= TARGET_VS_NUMPY,
                    "detail": f"{best['name']}: recall {best['recall_at_10']:.3f}, "
                    f"p50 {best['latency']['p50_ms']:.3f} ms vs NumPy {numpy_p50:.2f} ms = {speedup:.0f}x",
                    "value": round(speedup, 1),
                }
            )
        else:
            out.append(
                {
                    "target": f"(i) recall@10 >= {TARGET_RECALL} and p50 >= {TARGET_VS_NUMPY:g}x faster than "
                    "NumPy brute force",
                    "where": where,
                    "pass": False,
                    "detail": "no FAISS approximate index reached recall@10 >= 0.95 on the held-out queries",
                    "value": None,
                }
            )
        lance = [r for r in run["indexes"] if r["backend"] == "lancedb"]
        lance_good = [r for r in lance if r["recall_at_10"] >= TARGET_RECALL]
        if best and lance_good:
            fastest = min(lance_good, key=lambda r: r["latency"]["p50_ms"])
            ratio = fastest["latency"]["p50_ms"] / best["latency"]["p50_ms"]
            out.append(
                {
                    "target": f"(ii) at recall >= {TARGET_RECALL}, p50 >= {TARGET_VS_LANCE:g}x lower than "
                    "LanceDB's own index",
                    "where": where,
                    "pass": ratio >= TARGET_VS_LANCE,
                    "detail": f"{describe(best)} vs {describe(fastest)} = {ratio:.1f}x",
                    "value": round(ratio, 1),
                }
            )
        else:
            why = (
                "no FAISS index reached the recall"
                if not best
                else "no LanceDB index measured"
                if not lance
                else "no LanceDB index reached recall@10 >= 0.95 (best "
                + ", ".join(
                    f"{r['name']} {r['recall_at_10']:.3f} at {r['latency']['p50_ms']:.2f} ms" for r in lance
                )
                + ")"
            )
            out.append(
                {
                    "target": f"(ii) at recall >= {TARGET_RECALL}, p50 >= {TARGET_VS_LANCE:g}x lower than "
                    "LanceDB's own index",
                    "where": where,
                    "pass": None,
                    "detail": why,
                    "value": None,
                }
            )
        if good:
            fastest_e2e = min(good, key=lambda r: r["end_to_end"]["filtered"]["p50_ms"])
            e2e = fastest_e2e["end_to_end"]["filtered"]["p50_ms"]
            ratio = numpy_p50 / e2e
            flat = indexes.get("flat")
            vs_flat = (
                f", vs FAISS flat {flat['latency']['p50_ms']:.1f} ms: {flat['latency']['p50_ms'] / e2e:.1f}x"
                if flat
                else ""
            )
            out.append(
                {
                    "target": f"(iii) store.search with metadata + filters p50 >= "
                    f"{TARGET_E2E_VS_EXACT:g}x faster than exact brute force (NumPy)",
                    "where": where,
                    "pass": ratio >= TARGET_E2E_VS_EXACT,
                    "detail": f"store.search over {fastest_e2e['name']} with filters p50 {e2e:.2f} ms vs "
                    f"NumPy {numpy_p50:.2f} ms = {ratio:.1f}x{vs_flat}",
                    "value": round(ratio, 1),
                }
            )
        flat = indexes.get("flat")
        if flat:
            bound = run["bandwidth"]["bound_ms"]
            ratio = flat["vs_bound"]
            one = flat["vs_bound_1_thread"]
            out.append(
                {
                    "target": f"(iv) exact search (FAISS flat) p50 within {TARGET_FLAT_VS_BOUND}x the "
                    "bandwidth bound",
                    "where": where,
                    "pass": ratio <= TARGET_FLAT_VS_BOUND,
                    "detail": f"flat p50 {flat['latency']['p50_ms']:.1f} ms / bound {bound:.1f} ms = "
                    f"{ratio:.3f}x; FAISS forced to 1 thread {flat['latency_1_thread']['p50_ms']:.1f} ms = "
                    f"{one:.3f}x; NumPy sgemv (2 threads) {run['numpy']['vs_bound']:.3f}x",
                    "value": ratio,
                }
            )
    return out


# -- quality ----------------------------------------------------------------------------------------------


def quality_store(name: str, x: np.ndarray, ids: np.ndarray, stores: Path) -> embedstore.Store:
    path = stores / f"quality-{name}"
    meta = {
        "dataset": name,
        "rows": len(x),
        "dim": int(x.shape[1]),
        "ids": str(ids[:3]),
        "v": GENERATOR_VERSION,
    }
    marker = path.with_suffix(".json")
    if path.is_dir() and marker.is_file() and json.loads(marker.read_text()) == meta:
        return embedstore.open(path)
    marker.unlink(missing_ok=True)
    id_list = [str(t) for t in ids]

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(x), CHUNK):
            yield x[start : start + CHUNK]

    store = write_store(path, QUALITY_KEY, x.shape[1], len(x), chunks(), lambda s, n: id_list[s : s + n])
    marker.write_text(json.dumps(meta))
    return store


def run_quality(
    vectors: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]],
    stores: Path,
    draws: int = QUALITY_DRAWS,
) -> dict[str, Any]:
    sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]] = {}
    x, ids, labels, positive = vectors["pcam"]
    is_pos = labels == positive
    negatives = np.flatnonzero(~is_pos)
    wanted = round(PCAM_PREVALENCE / (1 - PCAM_PREVALENCE) * len(negatives))
    keep = np.sort(
        np.concatenate(
            [negatives, np.random.default_rng(0).choice(np.flatnonzero(is_pos), wanted, replace=False)]
        )
    )
    sets["pcam5"] = (x[keep], ids[keep], labels[keep], positive)
    sets["amibr"] = vectors["amibr"]
    out: dict[str, Any] = {
        "method": (
            f"{draws} draws (seeds 0..{draws - 1}) of {QUALITY_POSITIVES} query positives "
            f"(left out of the hits); negatives: {QUALITY_NEGATIVES} random tiles of the negative class "
            "(negatives=, also left out); store.search(k=200) over an exact flat index of the full "
            "1280-d lite0 vectors, raw cosine (center=False) or centred (center=True)"
        ),
        "datasets": {},
    }
    for name, (x, ids, labels, positive) in sets.items():
        harness.say(f"quality: {name} ({len(x)} tiles, positive {positive!r})")
        store = quality_store(name, x, ids, stores)
        for space, center in (("raw", False), ("centred", True)):
            store.index(QUALITY_KEY, kind="flat", center=center, name=f"flat-{space}")
        truth = dict(zip(ids.tolist(), (labels == positive).tolist(), strict=True))
        pos_ids, neg_ids = ids[labels == positive], ids[labels != positive]
        prevalence = len(pos_ids) / len(ids)
        rows: list[dict[str, Any]] = []
        for fusion in ("mean", "rrf"):
            for space in ("raw", "centred"):
                for with_negatives in (False, True):
                    p50, p200 = [], []
                    for seed in range(draws):
                        rng = np.random.default_rng(seed)
                        queries = rng.choice(pos_ids, QUALITY_POSITIVES, replace=False).tolist()
                        negs = (
                            rng.choice(neg_ids, QUALITY_NEGATIVES, replace=False).tolist()
                            if with_negatives
                            else []
                        )
                        hits = store.search(
                            QUALITY_KEY,
                            tiles=queries,
                            negatives=negs,
                            k=200,
                            index=f"flat-{space}",
                            fusion=fusion,
                        ).hits["tile_id"]
                        flags = np.array([truth[t] for t in hits.to_list()], dtype=float)
                        p50.append(flags[:50].mean())
                        p200.append(flags[:200].mean())
                    rows.append(
                        {
                            "fusion": fusion,
                            "space": space,
                            "negatives": QUALITY_NEGATIVES if with_negatives else 0,
                            "precision_at_50": [round(float(np.mean(p50)), 4), round(float(np.std(p50)), 4)],
                            "precision_at_200": [
                                round(float(np.mean(p200)), 4),
                                round(float(np.std(p200)), 4),
                            ],
                            "p200_over_prevalence": round(float(np.mean(p200)) / prevalence, 2),
                        }
                    )
        out["datasets"][name] = {
            "tiles": len(ids),
            "positives": len(pos_ids),
            "positive_label": positive,
            "prevalence": round(prevalence, 4),
            "max_precision_at_200": round(min(1.0, (len(pos_ids) - QUALITY_POSITIVES) / 200), 4),
            "results": rows,
        }
    out["choice"] = quality_choice(out["datasets"])
    default = next(
        r
        for r in out["datasets"]["pcam5"]["results"]
        if (r["fusion"], r["space"], r["negatives"]) == ("mean", "centred", 0)
    )
    best = max(out["datasets"]["pcam5"]["results"], key=lambda r: r["precision_at_200"][0])
    prevalence = out["datasets"]["pcam5"]["prevalence"]
    out["target"] = {
        "target": f"precision@200 >= {TARGET_QUALITY:g}x prevalence on PCam at 5 %",
        "prevalence": prevalence,
        "default": {
            "config": "fusion mean, centred, no negatives (embedstore's defaults)",
            "ratio": default["p200_over_prevalence"],
            "pass": default["p200_over_prevalence"] >= TARGET_QUALITY,
        },
        "best": {
            "config": f"fusion {best['fusion']}, {best['space']}, {best['negatives']} negatives",
            "ratio": best["p200_over_prevalence"],
            "pass": best["p200_over_prevalence"] >= TARGET_QUALITY,
        },
    }
    return out


def quality_choice(datasets: dict[str, Any]) -> dict[str, Any]:
    """Which of raw/centred and mean/rrf retrieves better: mean precision@200 / prevalence over datasets,
    draws, and the other factors."""

    def score(**match: Any) -> float:
        values = [
            r["p200_over_prevalence"]
            for d in datasets.values()
            for r in d["results"]
            if all(r[k] == v for k, v in match.items())
        ]
        return round(float(np.mean(values)), 3)

    spaces = {s: score(space=s) for s in ("raw", "centred")}
    fusions = {f: score(fusion=f) for f in ("mean", "rrf")}
    negatives = {str(n): score(negatives=n) for n in (0, QUALITY_NEGATIVES)}
    per_dataset = {}
    for name, d in datasets.items():
        best = max(d["results"], key=lambda r: r["precision_at_200"][0])
        per_dataset[name] = f"fusion {best['fusion']}, {best['space']}, {best['negatives']} negatives"
    return {
        "measure": "mean of precision@200 / prevalence over both datasets and the other factors",
        "space": spaces,
        "best_space": max(spaces, key=lambda k: spaces[k]),
        "fusion": fusions,
        "best_fusion": max(fusions, key=lambda k: fusions[k]),
        "negatives": negatives,
        "best_per_dataset": per_dataset,
    }


# -- outputs ----------------------------------------------------------------------------------------------


def plot(speed: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in speed}, key=lambda d: d != "synthetic")
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 5), squeeze=False)
    markers = {"flat": "s", "ivf": "o", "hnsw": "^", "ivfpq": "D", "lance-ivfpq": "x", "lance-hnsw": "+"}
    sizes = sorted({r["rows"] for r in speed})
    colours = {rows: plt.cm.viridis(i / max(1, len(sizes) - 1) * 0.8) for i, rows in enumerate(sizes)}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for run in [r for r in speed if r["dataset"] == dataset]:
            colour = colours[run["rows"]]
            for record in run["indexes"]:
                ax.scatter(
                    record["latency"]["p50_ms"],
                    record["recall_at_10"],
                    marker=markers.get(record["name"], "o"),
                    color=colour,
                    s=60,
                    label=f"{record['name']} {run['rows']:,}",
                )
            ax.axvline(run["numpy"]["latency"]["p50_ms"], color=colour, linestyle="--", linewidth=1)
            ax.text(
                run["numpy"]["latency"]["p50_ms"],
                0.98,
                f"NumPy brute force {run['rows']:,} ",
                rotation=90,
                color=colour,
                fontsize=7,
                va="top",
                ha="right",
                transform=ax.get_xaxis_transform(),
            )
        ax.axhline(TARGET_RECALL, color="grey", linestyle=":", linewidth=1)
        lowest = min(
            (r["recall_at_10"] for run in speed if run["dataset"] == dataset for r in run["indexes"]),
            default=1,
        )
        ax.set_ylim(min(0.9, lowest - 0.01), 1.005)
        ax.set_xscale("log")
        ax.set_xlabel("single-query p50 latency (ms, log)")
        ax.set_ylabel("recall@10 (held-out queries)")
        ax.set_title(f"{dataset}: recall vs latency ({DIM}-d)")
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_summary(result: dict[str, Any]) -> None:
    print("\n== similarity search: speed (recall@10 on held-out queries; latency = one query at a time) ==")
    header = (
        f"{'dataset':<10}{'rows':>9} {'index':<12}{'build s':>8}{'MiB':>7}{'+RSS':>7}  {'config':<40}"
        f"{'tuned':>6}{'recall':>7}{'p50 ms':>9}{'p99 ms':>9}{'1thr':>8}{'q/s':>9}{'e2e p50':>9}"
        f"{'filt p50':>9}{'filt p99':>9}{'load s':>7}"
    )
    print(header)
    print("-" * len(header))
    for run in result["speed"]:
        d, n = run["dataset"], run["rows"]
        numpy_lat = run["numpy"]["latency"]
        bw = run["bandwidth"]
        print(
            f"{d:<10}{n:>9} {'numpy':<12}{'':>8}{'':>7}{'':>7}  {'brute force (sgemv + argpartition)':<40}"
            f"{'':>6}{run['numpy']['recall_at_10']:>7.3f}{numpy_lat['p50_ms']:>9.2f}{numpy_lat['p99_ms']:>9.2f}"
        )
        label = f"bytes / {max(bw['gb_per_s'].values())} GB/s"
        pad = " " * 24
        print(f"{d:<10}{n:>9} {'bound':<12}{pad}{label:<40}{'':>13}{bw['bound_ms']:>9.2f}")
        for r in run["indexes"]:
            e2e = r["end_to_end"]
            tuned = "exact" if r["tuned_recall_at_10"] is None else f"{r['tuned_recall_at_10']:.3f}"
            one = r.get("latency_1_thread", {}).get("p50_ms")
            print(
                f"{d:<10}{n:>9} {r['name']:<12}{r['build_seconds']:>8.1f}{r['index_bytes'] / 2**20:>7.0f}"
                f"{r['build_rss_growth_bytes'] / 2**20:>7.0f}  {short_config(r['config'])[:39]:<40}{tuned:>6}"
                f"{r['recall_at_10']:>7.3f}{r['latency']['p50_ms']:>9.3f}{r['latency']['p99_ms']:>9.3f}"
                f"{(f'{one:.3f}' if one is not None else '-'):>8}{r['batch']['qps']:>9.0f}"
                f"{e2e['plain']['p50_ms']:>9.2f}{e2e['filtered']['p50_ms']:>9.2f}{e2e['filtered']['p99_ms']:>9.2f}"
                f"{e2e['load_seconds']:>7.2f}"
            )
        for s in run["skipped"]:
            print(f"{d:<10}{n:>9} {s['name']:<12} skipped: {s['why']}")
    print("\n== targets ==")
    for t in result["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[t["pass"]]
        print(f"{verdict}  {t['where']:<20} {t['target']}\n      {t['detail']}")
    quality = result.get("quality")
    if not quality:
        print(f"\nquality: skipped ({result.get('real_skipped', 'not run')})")
        return
    print("\n== retrieval quality (real lite0 vectors, 1280-d, exact; mean ± std over 20 draws) ==")
    for name, d in quality["datasets"].items():
        print(
            f"{name}: {d['tiles']} tiles, {d['positives']} positive ({d['positive_label']!r}), prevalence "
            f"{d['prevalence']:.3f}, best possible P@200 {d['max_precision_at_200']:.3f}"
        )
        print(f"  {'fusion':<7}{'space':<9}{'neg':>4}{'P@50':>16}{'P@200':>16}{'P@200/prev':>12}")
        for r in d["results"]:
            p50, p200 = r["precision_at_50"], r["precision_at_200"]
            print(
                f"  {r['fusion']:<7}{r['space']:<9}{r['negatives']:>4}{p50[0]:>9.3f} ± {p50[1]:.3f}"
                f"{p200[0]:>9.3f} ± {p200[1]:.3f}{r['p200_over_prevalence']:>12.2f}"
            )
    c = quality["choice"]
    print(f"\nbest space: {c['best_space']} {c['space']}; best fusion: {c['best_fusion']} {c['fusion']}")
    print(f"negatives (0 vs 5): {c['negatives']}; best per dataset: {c['best_per_dataset']}")
    t = quality["target"]
    for which in ("default", "best"):
        v = t[which]
        print(
            f"{'PASS' if v['pass'] else 'FAIL'}  {t['target']}: {v['config']}: P@200 = {v['ratio']:.2f}x "
            f"prevalence {t['prevalence']:.3f}"
        )


def smoke_vectors(dim: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """Generated stand-ins for real_vectors: PCam-shaped (2000 negatives, 200 positives) and AMi-Br-shaped
    (400 figures, 22 % Atypical), each class a Gaussian around its own centre on a shared offset."""
    rng = np.random.default_rng(0)
    out = {}
    for task, (negatives, positives, positive) in {
        "pcam": (2000, 200, "1"),
        "amibr": (312, 88, "Atypical"),
    }.items():
        labels = np.array(["0"] * negatives + [positive] * positives)
        centres = rng.normal(size=(2, dim)).astype(np.float32)
        x = (
            3
            + centres[(labels == positive).astype(int)]
            + rng.normal(size=(len(labels), dim)).astype(np.float32)
        )
        ids = np.array([f"{task}{i:05d}" for i in range(len(labels))])
        out[task] = (x.astype(np.float32), ids, labels, positive)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated table sizes")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries (recall, batch QPS)")
    parser.add_argument("--latency-queries", type=int, default=300, help="queries timed one at a time")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20k rows, 300 queries")
    parser.add_argument("--skip-real", action="store_true", help="synthetic data only, no quality part")
    parser.add_argument("--require-real", action="store_true", help="exit 2 when the real data is missing")
    parser.add_argument(
        "--real-store", type=Path, default=RESULTS / "real-store", help="store of real lite0 embeddings"
    )
    parser.add_argument(
        "--indexes", default=",".join(n for n, _ in INDEXES), help="comma-separated index names"
    )
    parser.add_argument(
        "--lance-hnsw-max-rows", type=int, default=10**9, help="skip lance-hnsw above this size"
    )
    parser.add_argument("--bandwidth-gib", type=float, default=2.0, help="array size for the bandwidth probe")
    parser.add_argument(
        "--resume", action="store_true", help="keep what --out already holds, measure the rest"
    )
    parser.add_argument(
        "--report", action="store_true", help="only re-evaluate targets, plot and print from --out's JSON"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path [results/search.json]")
    parser.add_argument(
        "--reuse-indexes",
        action="store_true",
        help="search indexes a previous run left in the cached stores instead of rebuilding them",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        with harness.scratch("search-") as tmp:
            args.sizes, args.queries, args.latency_queries, args.bandwidth_gib = "2000", 50, 20, 0.01
            args.indexes = "flat,ivf,hnsw"  # the PQ and LanceDB builds take tens of seconds on any size
            args.stores, args.real_store = tmp / "search-stores", tmp / "real-store"
            return run(args, parser)
    args.stores = STORES
    return run(args, parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Measure (or, with --report, re-report) and write the JSON and the plot."""
    global REUSE_INDEXES
    REUSE_INDEXES = args.reuse_indexes
    if args.quick:
        args.sizes, args.queries = "20000", min(args.queries, 300)
    out = args.out or RESULTS / ("search_quick.json" if args.quick else "search.json")
    png = out.with_name(out.stem.replace("search", "search_recall_latency", 1) + ".png")
    if args.report:
        result = json.loads(out.read_text())
        result["targets"] = evaluate_targets([r for r in result["speed"] if r])
        harness.write_json(out, result)
        plot([r for r in result["speed"] if r], png)
        print_summary(result)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    index_names = [n.strip() for n in args.indexes.split(",") if n.strip()]
    unknown = [n for n in index_names if n not in dict(INDEXES)]
    if unknown or "flat" not in index_names:
        parser.error(f"--indexes: names from {', '.join(dict(INDEXES))}, flat included (unknown: {unknown})")
    started = time.perf_counter()
    harness.say(
        f"search benchmark: sizes {sizes}, {args.queries} queries ({args.latency_queries} timed singly), "
        f"indexes {index_names}; faiss {faiss.__version__} with {faiss.omp_get_max_threads()} OpenMP threads"
    )
    result: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": harness.machine(
            faiss=faiss.__version__,
            faiss_omp_threads=faiss.omp_get_max_threads(),
            load_average_start=os.getloadavg(),
        ),
        "args": {k: str(v) for k, v in vars(args).items()},
        "notes": [
            "single-query latency: through FaissIndex.search as embedstore runs it (latency; embedstore "
            "runs batches below faiss_index.PARALLEL_FROM queries on 1 OpenMP thread) and with FAISS "
            "forced to 1 thread globally (latency_1_thread); the machine is shared with other work, so "
            "latencies carry its noise (load averages recorded)",
            "LanceDB's own index: embedstore's LanceIndex, i.e. pylance dataset.to_table(nearest=...) one "
            "query at a time (the engine LanceDB uses), tuned by embedstore like the FAISS kinds",
            "recall_at_10: of the raw index (backend.search) on held-out queries; tuned_recall_at_10: "
            "embedstore's own tuning measure (stored rows as queries, the row itself left out)",
        ],
    }
    vectors = None
    if args.smoke:
        vectors = smoke_vectors()
        result["real_skipped"] = "--smoke: generated vectors stand in for the real ones"
    elif not args.skip_real:
        store, how = real_store(args.real_store)
        if store is None:
            print(f"real data skipped: {how}", file=sys.stderr)
            if args.require_real:
                return 2
            result["real_skipped"] = how
        else:
            harness.say(f"real embeddings: {how}")
            vectors = real_vectors(store)
            result["real_source"] = {
                "store": str(store.root),
                "how": how,
                **{t: {"tiles": len(v[0]), "dim": int(v[0].shape[1])} for t, v in vectors.items()},
            }
            del store
    else:
        result["real_skipped"] = "--skip-real"

    datasets: list[Synthetic | RealTiled] = [Synthetic()]
    if vectors is not None and not args.smoke:
        base = np.concatenate([vectors["pcam"][0], vectors["amibr"][0]])
        datasets.append(RealTiled(base, "PCam + AMi-Br"))
        del base
    previous: dict[tuple[str, int], dict[str, Any]] = {}
    if args.resume and out.is_file():
        old = json.loads(out.read_text())
        if old.get("args", {}).get("queries") == str(args.queries):
            previous = {(r["dataset"], r["rows"]): r for r in old.get("speed", []) if r}
            result["resumed_from"] = {"file": str(out), "runs": [f"{d} x {n}" for d, n in previous]}
            harness.say(f"resuming from {out}: {', '.join(result['resumed_from']['runs']) or 'nothing'}")

    def save() -> None:  # partial results as we go: a killed run can be resumed with --resume
        harness.write_json(out, result)

    result["speed"] = []
    for data in datasets:
        for rows in sizes:
            before = previous.get((data.name, rows))
            if before and before.get("complete"):
                harness.say(f"{data.name} x {rows}: complete in {out}, kept")
                result["speed"].append(before)
                continue
            phase = time.perf_counter()
            result["speed"].append({})

            def checkpoint(run: dict[str, Any], phase: float = phase, earlier: float = 0.0) -> None:
                run["seconds"] = round(time.perf_counter() - phase + earlier, 1)
                result["speed"][-1] = run
                save()

            earlier = float((before or {}).get("seconds", 0.0))
            run = run_speed(
                data, rows, args, index_names, before, lambda r, e=earlier: checkpoint(r, earlier=e)
            )
            run["complete"] = True
            checkpoint(run, earlier=earlier)
            harness.say(f"{data.name} x {rows}: done in {run['seconds']:.0f} s")
    result["targets"] = evaluate_targets(result["speed"])
    if vectors is not None:
        phase = time.perf_counter()
        result["quality"] = run_quality(vectors, args.stores, 2 if args.smoke else QUALITY_DRAWS)
        result["quality"]["seconds"] = round(time.perf_counter() - phase, 1)
    result["machine"]["load_average_end"] = os.getloadavg()
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    result["speed_seconds_all_sessions"] = round(sum(r["seconds"] for r in result["speed"]), 1)
    harness.write_json(out, result)
    plot(result["speed"], png)
    print_summary(result)
    print(f"\nwrote {out} and {png}; total {result['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
