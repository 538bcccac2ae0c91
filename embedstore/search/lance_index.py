"""LanceDB's own vector index (IVF_PQ or IVF_HNSW_SQ) over a copy of the prepared vectors.

The same engine LanceDB uses (pylance), on a small dataset of (pos, vector) kept in the index directory,
so the store's embedding table is never modified by indexing. Rows added later are appended and searched
exhaustively by Lance until `optimize_indices` folds them into the index (done on every add).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from ..core.location import ObjectPath
from .configs import LanceConfig

MAX_REFINE = 128
LANCE_METRICS = {"cosine": "dot", "l2": "l2"}  # cosine vectors are unit length already


class LanceIndex:
    """A Lance dataset with a vector index; positions are its row numbers (rows are only appended)."""

    backend = "lancedb"

    def __init__(self, dataset: lance.LanceDataset, config: LanceConfig, metric: str) -> None:
        self.dataset, self.config, self.metric = dataset, config, metric

    @classmethod
    def build(
        cls, config: LanceConfig, vectors: np.ndarray, metric: str, path: Path | ObjectPath
    ) -> LanceIndex:
        dataset = lance.write_dataset(_rows(vectors, 0), str(path), mode="overwrite")
        options: dict[str, Any] = {"num_partitions": config.num_partitions}
        if config.index_type == "IVF_PQ":
            options["num_sub_vectors"] = config.num_sub_vectors
        dataset.create_index("vector", index_type=config.index_type, metric=LANCE_METRICS[metric], **options)
        return cls(lance.dataset(str(path)), config, metric)

    @classmethod
    def load(
        cls, path: Path | ObjectPath, config: LanceConfig, metric: str, version: int | None = None
    ) -> LanceIndex:
        return cls(lance.dataset(str(path), version=version), config, metric)

    @property
    def rows(self) -> int:
        return self.dataset.count_rows()

    @property
    def version(self) -> int:
        return int(self.dataset.version)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for i, query in enumerate(np.asarray(queries, dtype=np.float32)):
            nearest = {
                "column": "vector",
                "q": query,
                "k": k,
                "nprobes": self.config.nprobes,
                "refine_factor": self.config.refine_factor,
            }
            found = self.dataset.to_table(nearest=nearest, columns=["pos", "_distance"])
            positions = found.column("pos").to_numpy()
            out[i, : len(positions)] = positions
        return out

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        table = self.dataset.take(np.asarray(positions, dtype=np.int64), columns=["vector"])
        column = table.column("vector").combine_chunks()
        return column.values.to_numpy().reshape(len(table), -1).astype(np.float32, copy=False)

    @property
    def name(self) -> str:
        """The name of the dataset's directory."""
        return self.dataset.uri.rstrip("/").rsplit("/", 1)[-1]

    def move_to(self, path: Path) -> None:
        """Rename the dataset's directory (a finished build takes its final name)."""
        Path(self.dataset.uri).rename(path)
        self.dataset = lance.dataset(str(path), version=self.version)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows after this index's own version (undoing any append a crashed update left)."""
        if self.dataset.latest_version != self.version:
            self.dataset.restore()
        lance.write_dataset(_rows(vectors, self.rows), self.dataset.uri, mode="append")
        dataset = lance.dataset(self.dataset.uri)
        dataset.optimize.optimize_indices()
        self.dataset = lance.dataset(self.dataset.uri)

    def widen(self) -> bool:
        """Search more broadly: double nprobes or refine_factor (the one doubled least so far)."""
        config, start = self.config, LanceConfig()
        knobs = [
            (config.nprobes / start.nprobes, "nprobes", config.num_partitions or 1),
            (config.refine_factor / start.refine_factor, "refine_factor", MAX_REFINE),
        ]
        growable = [
            (ratio, name, ceiling) for ratio, name, ceiling in knobs if getattr(config, name) < ceiling
        ]
        if not growable:
            return False
        _, name, ceiling = min(growable)
        self.apply(dataclasses.replace(config, **{name: min(2 * getattr(config, name), ceiling)}))
        return True

    def apply(self, config: LanceConfig) -> None:
        self.config = config


def _rows(vectors: np.ndarray, start: int) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    return pa.table(
        {
            "pos": pa.array(np.arange(start, start + len(vectors), dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )
