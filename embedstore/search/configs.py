"""Index settings: one dataclass per kind of index, and `auto`, which picks one by the table's size.

    store.index("tf_efficientnet_lite0.in1k", config=HnswConfig(m=48))

Every approximate kind is tuned after it is built: its search breadth (`nprobe`, `ef_search`,
`refine_factor`) is doubled until recall@10 against exact search, on a sample of the table's own vectors,
reaches `target_recall`; the values found and the recall measured are recorded in the index's manifest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.errors import EmbedstoreError

EXACT_BELOW = 100_000  # `auto` builds an exact index below this many vectors
MIN_CLUSTERED_ROWS = 1_000  # IVF kinds below this: too few vectors to train cells on
KINDS = ("auto", "flat", "ivf", "hnsw", "ivfpq")
LANCE_KINDS = ("auto", "ivfpq", "hnsw")  # LanceDB's own indexes: IVF_PQ and IVF_HNSW_SQ
METRICS = ("cosine", "l2")
BACKENDS = ("faiss", "lancedb")


@dataclass(frozen=True)
class FlatConfig:
    """Exact search: each query is compared with every vector. The right choice below ~100k vectors."""

    kind: ClassVar[str] = "flat"

    def resolved(self, rows: int, dim: int) -> FlatConfig:
        return self


@dataclass(frozen=True)
class IvfConfig:
    """Inverted file (IVF-Flat): k-means cells; a query scans the `nprobe` cells nearest to it.

    Attributes:
        nlist: number of cells; None: about 4·√rows (so each cell holds ~√rows/4 vectors).
        nprobe: cells scanned per query (tuned up from this value to reach `target_recall`).
        target_recall: recall@10 the tuning step aims for.
    """

    kind: ClassVar[str] = "ivf"
    nlist: int | None = None
    nprobe: int = 8
    target_recall: float = 0.95

    def resolved(self, rows: int, dim: int) -> IvfConfig:
        nlist = self.nlist or default_nlist(rows)
        check_trainable(self.kind, rows, nlist)
        return dataclasses.replace(self, nlist=nlist, nprobe=min(self.nprobe, nlist))


@dataclass(frozen=True)
class HnswConfig:
    """Hierarchical navigable small-world graph over the full vectors: fast, exact vectors kept.

    Attributes:
        m: graph neighbours per vector (memory grows with it; 32 suits 256-1024-d embeddings).
        ef_construction: candidate list while building (higher: better graph, slower build).
        ef_search: candidate list while searching (tuned up from this value to reach `target_recall`).
        target_recall: recall@10 the tuning step aims for.
    """

    kind: ClassVar[str] = "hnsw"
    m: int = 32
    ef_construction: int = 64
    ef_search: int = 32
    target_recall: float = 0.95

    def resolved(self, rows: int, dim: int) -> HnswConfig:
        return self


@dataclass(frozen=True)
class IvfPqConfig:
    """IVF with product-quantised codes, then a refine step that re-ranks with the exact vectors.

    Attributes:
        nlist: number of cells; None: about 4·√rows.
        m: sub-quantisers (bytes per code with nbits 8); None: dim/8 rounded to a divisor of dim.
        nbits: bits per sub-quantiser code.
        nprobe: cells scanned per query (tuned up to reach `target_recall`).
        refine_factor: the PQ search returns k·refine_factor candidates, re-ranked exactly.
        target_recall: recall@10 the tuning step aims for.
    """

    kind: ClassVar[str] = "ivfpq"
    nlist: int | None = None
    m: int | None = None
    nbits: int = 8
    nprobe: int = 8
    refine_factor: int = 8
    target_recall: float = 0.95

    def resolved(self, rows: int, dim: int) -> IvfPqConfig:
        nlist = self.nlist or default_nlist(rows)
        check_trainable(self.kind, rows, nlist)
        m = self.m or _divisor_near(dim, max(1, dim // 8))
        if dim % m:
            raise EmbedstoreError(
                f"ivfpq m={m} must divide the vector size {dim}; try m={_divisor_near(dim, m)}"
            )
        if rows < 2**self.nbits:
            raise EmbedstoreError(
                f"ivfpq needs at least {2**self.nbits} vectors to train {self.nbits}-bit codes, the table "
                f"has {rows}; use --kind flat (exact) for a table this small"
            )
        return dataclasses.replace(self, nlist=nlist, m=m, nprobe=min(self.nprobe, nlist))


@dataclass(frozen=True)
class LanceConfig:
    """LanceDB's own vector index on a copy of the vectors (to compare with FAISS behind the same API).

    Attributes:
        index_type: "IVF_PQ" or "IVF_HNSW_SQ".
        num_partitions: IVF partitions; None: about 4·√rows.
        num_sub_vectors: PQ sub-vectors (IVF_PQ); None: dim/8 rounded to a divisor of dim.
        nprobes: partitions searched per query (tuned up to reach `target_recall`).
        refine_factor: re-rank k·refine_factor candidates with the exact vectors.
        target_recall: recall@10 the tuning step aims for.
    """

    kind: ClassVar[str] = "lancedb"
    index_type: str = "IVF_PQ"
    num_partitions: int | None = None
    num_sub_vectors: int | None = None
    nprobes: int = 8
    refine_factor: int = 8
    target_recall: float = 0.95

    def resolved(self, rows: int, dim: int) -> LanceConfig:
        partitions = self.num_partitions or default_nlist(rows)
        check_trainable("lancedb " + self.index_type, rows, partitions)
        sub = self.num_sub_vectors or _divisor_near(dim, max(1, dim // 8))
        return dataclasses.replace(
            self, num_partitions=partitions, num_sub_vectors=sub, nprobes=min(self.nprobes, partitions)
        )


IndexConfig = FlatConfig | IvfConfig | HnswConfig | IvfPqConfig | LanceConfig
CONFIGS: dict[str, type] = {c.kind: c for c in (FlatConfig, IvfConfig, HnswConfig, IvfPqConfig, LanceConfig)}


def default_nlist(rows: int) -> int:
    """About 4·√rows cells, at least 1, and never more than rows/39 (FAISS wants ≥39 points per cell)."""
    return max(1, min(int(4 * math.sqrt(rows)), rows // 39))


def check_trainable(kind: str, rows: int, nlist: int) -> None:
    """Refuse a clustering that the table is too small for, naming the way out."""
    if rows < MIN_CLUSTERED_ROWS:
        raise EmbedstoreError(
            f"--kind {kind} clusters the vectors and needs at least {MIN_CLUSTERED_ROWS}, the table has "
            f"{rows}; use --kind flat (exact search is fast below {EXACT_BELOW} vectors)"
        )
    if rows < nlist:
        raise EmbedstoreError(
            f"--kind {kind} with {nlist} lists needs at least {nlist} vectors, the table has {rows}; "
            "use --kind flat (exact) or fewer lists"
        )


def config_for(kind: str, backend: str, rows: int) -> IndexConfig:
    """The default settings of `kind` (`auto`: exact below EXACT_BELOW vectors, else IVF-PQ + refine)."""
    if backend == "lancedb":
        if kind not in LANCE_KINDS:
            raise EmbedstoreError(
                f"--backend lancedb builds {', '.join(LANCE_KINDS)}, not {kind!r}; use --backend faiss"
            )
        return LanceConfig(index_type="IVF_HNSW_SQ" if kind == "hnsw" else "IVF_PQ")
    if kind == "auto":
        return FlatConfig() if rows < EXACT_BELOW else IvfPqConfig()
    if kind not in CONFIGS or kind == "lancedb":
        raise EmbedstoreError(f"--kind {kind!r} must be one of {', '.join(KINDS)}")
    return CONFIGS[kind]()


def config_to_dict(config: IndexConfig) -> dict[str, Any]:
    return {"kind": config.kind, **dataclasses.asdict(config)}


def config_from_dict(record: dict[str, Any]) -> IndexConfig:
    fields = {k: v for k, v in record.items() if k != "kind"}
    return CONFIGS[record["kind"]](**fields)


def _divisor_near(dim: int, wanted: int) -> int:
    """The divisor of `dim` closest to `wanted` (PQ needs sub-vectors that split the vector evenly)."""
    divisors = [d for d in range(1, dim + 1) if dim % d == 0]
    return min(divisors, key=lambda d: (abs(d - wanted), d))
