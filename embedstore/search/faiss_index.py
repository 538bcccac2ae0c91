"""FAISS indexes: build one kind from its config, search, add, read vectors back, save and load.

On a machine where the installed faiss has GPU support and a GPU is present (`pip install
embedstore[gpu]`), flat and IVF indexes are searched on the GPU; the index saved is always the CPU one.

IVF-PQ comes two ways: built in memory by `build` it keeps the exact vectors to refine with (IndexRefineFlat,
as indexes saved before streaming builds do); built from the table by `streamed_ivfpq.build` it holds the
codes only, and its candidates (k x refine_factor) are re-scored with exact vectors read from the table
(`TableVectors`, attached with `read_exact_from`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import faiss
import numpy as np

from ..core.errors import EmbedstoreError
from ..core.location import ObjectPath
from .configs import FlatConfig, HnswConfig, IndexConfig, IvfConfig, IvfPqConfig

# Fewer queries than this run on one OpenMP thread in the approximate kinds: for one query, starting and
# syncing threads costs more than the little work it splits. An exact scan of so few queries is a BLAS
# matrix-vector product instead: memory-bandwidth-bound and threaded over rows, where FAISS's own flat scan
# splits work by query and so runs one query on one core (1.67x the bandwidth bound at 1M x 384 on this
# 2-core machine; benchmarks/search.py).
PARALLEL_FROM = 8
MAX_REFINE = 128  # candidates re-ranked exactly: k x this at most
MAX_EF_SEARCH = 4096
TRAIN_POINTS_PER_LIST = 64  # k-means sample: FAISS wants >= 39 points per list, more gains little


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run FAISS with `count` OpenMP threads (None: as configured)."""
    if count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def faiss_version() -> str:
    return str(faiss.__version__)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def check_device(device: str) -> None:
    """A one-line error when `device` cannot be honoured on this machine (cuda without a GPU faiss)."""
    if device == "cuda" and not gpu_available():
        raise EmbedstoreError(
            "--device cuda: this faiss has no GPU support or no GPU is visible; "
            "install embedstore[gpu] (faiss-gpu-cu12) or use --device cpu"
        )


class FaissIndex:
    """One FAISS index over prepared vectors; positions are row numbers in the order vectors were added."""

    backend = "faiss"

    def __init__(self, index: faiss.Index, config: IndexConfig, device: str = "auto") -> None:
        self.index, self.config = index, config
        # codes-only IVF-PQ: candidates re-scored with exact vectors from `read_exact_from`
        self.codes_only = isinstance(config, IvfPqConfig) and not isinstance(index, faiss.IndexRefine)
        self.exact: Callable[[np.ndarray], np.ndarray] | None = None
        if isinstance(config, IvfConfig):
            faiss.extract_index_ivf(index).make_direct_map()  # lets `vectors` read rows back
        check_device(device)
        self.on_gpu = device != "cpu" and gpu_available() and isinstance(config, FlatConfig | IvfConfig)
        self._searcher = self._gpu_copy() if self.on_gpu else index
        self._squared_norms: np.ndarray | None = None  # flat l2 scans through BLAS, computed once
        self.apply(config)

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def build(cls, config: IndexConfig, vectors: np.ndarray, metric: str, device: str = "auto") -> FaissIndex:
        dim = vectors.shape[1]
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        index = _empty(config, dim, faiss_metric)
        if not index.is_trained:
            index.train(_training_sample(vectors, config))
        index.add(vectors)
        return cls(index, config, device)

    @classmethod
    def load(cls, path: Path | ObjectPath, config: IndexConfig, device: str = "auto") -> FaissIndex:
        if isinstance(path, ObjectPath):
            index = faiss.deserialize_index(np.frombuffer(path.read_bytes(), dtype=np.uint8))
        else:
            index = faiss.read_index(str(path))
        return cls(index, config, device)

    def read_exact_from(self, exact: Callable[[np.ndarray], np.ndarray]) -> None:
        """Where a codes-only IVF-PQ index reads the exact (prepared) vectors of positions."""
        self.exact = exact

    def save(self, path: Path | ObjectPath) -> int:
        """Write the index; returns the bytes written."""
        if isinstance(path, ObjectPath):
            data = faiss.serialize_index(self.index).tobytes()
            path.write_bytes(data)
            return len(data)
        faiss.write_index(self.index, str(path))
        return path.stat().st_size

    def memory_bytes(self) -> int:
        """About what the index holds in memory (FAISS structures only; ids and addresses not included)."""
        rows, dim = self.rows, int(self.index.d)
        if isinstance(self.config, FlatConfig):
            return rows * dim * 4
        if isinstance(self.config, HnswConfig):
            return rows * (dim * 4 + self.config.m * 2 * 4 + 8)
        ivf = faiss.extract_index_ivf(self.index)
        quantizer = ivf.nlist * dim * 4
        lists = rows * (int(ivf.code_size) + 8)  # each code and its id
        codebooks = 0
        if isinstance(self.config, IvfPqConfig):
            pq = cast(faiss.IndexIVFPQ, faiss.downcast_index(ivf)).pq
            codebooks = int(pq.M) * int(pq.ksub) * int(pq.dsub) * 4
        refine = 0 if self.codes_only else (rows * dim * 4 if isinstance(self.config, IvfPqConfig) else 0)
        direct = rows * 8 if isinstance(self.config, IvfConfig) else 0  # the direct map
        return quantizer + lists + codebooks + refine + direct

    # -- using ----------------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(q, k) positions of the nearest vectors, best first; -1 pads when fewer exist."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        few = len(queries) < PARALLEL_FROM and not self.on_gpu
        if few and isinstance(self.config, FlatConfig):
            return self._blas_scan(queries, k)
        wanted = k * self.config.refine_factor if self.codes_only else k  # type: ignore[union-attr]
        with _threads(1 if few else None):
            _, positions = self._searcher.search(queries, min(wanted, max(self.rows, 1)))
        return self._rescored(queries, positions, k) if self.codes_only else positions

    def _rescored(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
        """The k best of each query's candidates by exact score, with vectors read through `exact`."""
        if self.exact is None:
            raise EmbedstoreError("this IVF-PQ index holds codes only: attach its table with read_exact_from")
        valid = candidates >= 0
        unique, inverse = np.unique(candidates[valid], return_inverse=True)
        vectors = self.exact(unique)
        where = np.zeros(candidates.shape, dtype=np.int64)
        where[valid] = inverse.reshape(-1)
        l2 = self.index.metric_type == faiss.METRIC_L2
        scores = np.empty(candidates.shape, dtype=np.float32)
        for i in range(len(queries)):  # one (candidates, dim) product a query: small in memory
            block = vectors[where[i]]
            products = block @ queries[i]
            scores[i] = 2 * products - np.einsum("ij,ij->i", block, block) if l2 else products
        scores[~valid] = -np.inf
        order = np.lexsort((candidates, -scores), axis=-1)[:, :k]
        positions = np.take_along_axis(candidates, order, axis=1)
        positions[np.take_along_axis(~valid, order, axis=1)] = -1
        out = np.full((len(queries), k), -1, dtype=np.int64)
        out[:, : positions.shape[1]] = positions
        return out

    def _blas_scan(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Exact top-k of a few queries as one BLAS product over the flat index's own memory (no copy)."""
        rows, dim = self.rows, self.index.d
        stored = faiss.rev_swig_ptr(cast(faiss.IndexFlat, self.index).get_xb(), rows * dim).reshape(rows, dim)
        cost = -(stored @ queries.T).T  # (q, rows): lower is nearer
        if self.index.metric_type == faiss.METRIC_L2:
            if self._squared_norms is None or len(self._squared_norms) != rows:
                self._squared_norms = np.einsum("ij,ij->i", stored, stored)
            cost = self._squared_norms + 2 * cost  # |x - q|^2 less |q|^2, which does not change the order
        found = min(k, rows)
        top = (
            np.argpartition(cost, found - 1, axis=1)[:, :found]
            if found < rows
            else np.tile(np.arange(rows), (len(queries), 1))
        )
        order = np.argsort(np.take_along_axis(cost, top, axis=1), axis=1, kind="stable")
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        positions[:, :found] = np.take_along_axis(top, order, axis=1)
        return positions

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """Stored vectors at `positions`; exact for every kind (IVF-PQ: kept to refine, or read from the
        table)."""
        if self.codes_only:
            if self.exact is None:
                raise EmbedstoreError(
                    "this IVF-PQ index holds codes only: attach its table with read_exact_from"
                )
            return self.exact(np.asarray(positions, dtype=np.int64))
        exact = (
            faiss.downcast_index(cast(faiss.IndexRefine, self.index).refine_index)
            if isinstance(self.config, IvfPqConfig)
            else self.index
        )
        return exact.reconstruct_batch(np.asarray(positions, dtype=np.int64))

    def add(self, vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        if self.on_gpu:
            self._searcher = self._gpu_copy()
            self.apply(self.config)

    # -- search breadth (what tuning turns) -----------------------------------------------------------

    def widen(self) -> bool:
        """Search more broadly (slower, higher recall); False when there is nothing left to widen."""
        knobs = _knobs(self.config)
        growable = [
            (value / start, name, ceiling) for name, value, start, ceiling in knobs if value < ceiling
        ]
        if not growable:
            return False
        _, name, ceiling = min(growable)  # the knob doubled least so far
        self.apply(dataclasses.replace(self.config, **{name: min(2 * getattr(self.config, name), ceiling)}))
        return True

    def apply(self, config: IndexConfig) -> None:
        """Set the search-time settings of `config` (nprobe, ef_search, refine_factor) on the index."""
        self.config = config
        if isinstance(config, IvfConfig | IvfPqConfig):
            faiss.extract_index_ivf(self.index).nprobe = config.nprobe
            if self._searcher is not self.index:
                self._searcher.nprobe = config.nprobe  # type: ignore[attr-defined]  # a GPU IVF index: not in the stub
        if isinstance(config, IvfPqConfig) and not self.codes_only:
            cast(faiss.IndexRefine, self.index).k_factor = float(config.refine_factor)
        if isinstance(config, HnswConfig):
            cast(faiss.IndexHNSW, self.index).hnsw.efSearch = config.ef_search

    def _gpu_copy(self) -> faiss.Index:
        resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(resources, 0, self.index)


def _knobs(config: IndexConfig) -> list[tuple[str, int, int, int]]:
    """(field, value, its default, ceiling) of each search-time setting tuning may raise."""
    if isinstance(config, IvfConfig):
        defaults = type(config)()
        return [("nprobe", config.nprobe, defaults.nprobe, config.nlist or 1)]
    if isinstance(config, IvfPqConfig):
        pq_defaults = type(config)()
        return [
            ("nprobe", config.nprobe, pq_defaults.nprobe, config.nlist or 1),
            ("refine_factor", config.refine_factor, pq_defaults.refine_factor, MAX_REFINE),
        ]
    if isinstance(config, HnswConfig):
        return [("ef_search", config.ef_search, type(config)().ef_search, MAX_EF_SEARCH)]
    return []


def _empty(config: IndexConfig, dim: int, metric: int) -> faiss.Index:
    if isinstance(config, FlatConfig):
        return faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)
    if isinstance(config, HnswConfig):
        index = faiss.IndexHNSWFlat(dim, config.m, metric)
        index.hnsw.efConstruction = config.ef_construction
        return index
    quantizer = faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)
    # nlist (and m) are set from the rows by `config.resolved` before an index is built
    if isinstance(config, IvfConfig):
        assert config.nlist is not None
        ivf = faiss.IndexIVFFlat(quantizer, dim, config.nlist, metric)
        ivf.own_fields = True
        quantizer.this.disown()  # type: ignore[union-attr]  # SWIG's ownership handle: not in the stub
        return ivf
    if isinstance(config, IvfPqConfig):
        assert config.nlist is not None and config.m is not None
        base = faiss.IndexIVFPQ(quantizer, dim, config.nlist, config.m, config.nbits, metric)
        base.own_fields = True
        quantizer.this.disown()  # type: ignore[union-attr]  # SWIG's ownership handle: not in the stub
        refined = faiss.IndexRefineFlat(base)
        refined.own_fields = True
        base.this.disown()  # type: ignore[attr-defined]  # SWIG's ownership handle: not in the stub
        refined.k_factor = float(config.refine_factor)
        return refined
    raise EmbedstoreError(f"faiss cannot build a {type(config).__name__}; use --backend lancedb for it")


def empty_codes(config: IvfPqConfig, dim: int, metric: str) -> faiss.IndexIVFPQ:
    """An untrained IVF-PQ index holding codes only (no exact vectors): the streamed build's."""
    assert config.nlist is not None and config.m is not None  # set by `config.resolved`
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, config.nlist, config.m, config.nbits, faiss_metric)
    index.own_fields = True
    quantizer.this.disown()  # type: ignore[union-attr]  # SWIG's ownership handle: not in the stub
    return index


def training_rows(rows: int, config: IndexConfig, seed: int = 0) -> np.ndarray:
    """Sorted row numbers of the k-means training sample (all rows when the table is small)."""
    nlist = getattr(config, "nlist", None) or 1
    wanted = max(nlist * TRAIN_POINTS_PER_LIST, 2 ** getattr(config, "nbits", 8) * 40)
    if rows <= wanted:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, wanted, replace=False))


def _training_sample(vectors: np.ndarray, config: IndexConfig) -> np.ndarray:
    nlist = getattr(config, "nlist", None) or 1
    wanted = max(nlist * TRAIN_POINTS_PER_LIST, 2 ** getattr(config, "nbits", 8) * 40)
    if len(vectors) <= wanted:
        return vectors
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), wanted, replace=False))
    return vectors[rows]
