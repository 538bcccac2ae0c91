"""An index's manifest: what it was built from (table, version, rows), how, and how well it recalls.

Saved as `manifest.json` beside the index files and replaced atomically, so a reader sees either the old
index or the new one, never a mix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import EmbedstoreError
from ..core.location import ObjectPath
from ..core.reports import JsonReport
from ..storage.saved import INDEX_MANIFEST

MANIFEST = INDEX_MANIFEST  # the file `embedstore info` reads too


@dataclass
class IndexManifest(JsonReport):
    """Everything needed to load an index and to tell whether it still matches its table."""

    name: str
    backend: str  # faiss | lancedb
    kind: str  # flat | ivf | hnsw | ivfpq | lancedb
    metric: str
    center: bool
    config: dict[str, Any]
    table: str
    table_version: int  # the version the index matches (built from, or updated to)
    built_from_version: int
    backbone: str
    weights_sha256: str
    dim: int
    rows: int
    build_seconds: float
    recall_at_10: float | None  # measured on a sample of the table's own vectors; None: exact search
    recall_queries: int
    files: dict[str, str]  # role -> file name in the index directory
    mean: list[float] | None = None  # the centring vector (cosine with centring)
    centered_on: str | None = None  # "table", "subset" or "none" (None: written before it was recorded)
    centered_on_where: str | None = None  # the subset's SQL (index --center-on)
    mean_version: int | None = None  # the table version whose rows the mean was computed over
    norms: bool = False  # the ids file holds each row's length before normalising (re-centring needs it)
    rows_added: int = 0  # rows added by updates since the build
    lance_version: int | None = None  # version of the Lance copy of the vectors (lancedb backend)
    index_bytes: int | None = None  # the FAISS index file's size on disk (None: lancedb, or older)
    memory_bytes: int | None = None  # about what the loaded index holds in memory (codes, lists, addresses)
    created: str = ""
    updated: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        """Short: the name, what it indexes and how (the full record, centre vector included, is
        `to_dict()`)."""
        recall = "exact" if self.recall_at_10 is None else f"recall@10={self.recall_at_10:.3f}"
        return (
            f"IndexManifest(name={self.name!r}, {self.backend} {self.kind}, metric={self.metric!r}, "
            f"centring={self.centring!r}, table={self.table!r} v{self.table_version}, rows={self.rows}, "
            f"dim={self.dim}, {recall})"
        )

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    @property
    def centring(self) -> str:
        """What the stored vectors are centred on: "table", "subset" (centered_on_where), "none", or "l2"
        (no centring applies)."""
        if self.metric != "cosine":
            return "l2"
        if self.centered_on is not None:
            return self.centered_on
        return "table" if self.center else "none"  # manifests written before `centered_on`

    def described(self) -> str:
        """e.g. "index 'flat' (faiss flat, built centred on the table's mean over 12,345 rows @ v7)"."""
        how = {
            "table": "centred on the table's mean",
            "subset": f"centred on the mean of tiles where {self.centered_on_where}",
            "none": "uncentred",
            "l2": "for l2",
        }[self.centring]
        return (
            f"index {self.name!r} ({self.backend} {self.kind}, built {how} over {self.rows:,} rows "
            f"@ v{self.table_version})"
        )

    def mean_vector(self) -> np.ndarray | None:
        return None if self.mean is None else np.asarray(self.mean, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        recall = "exact" if self.recall_at_10 is None else f"recall@10 {self.recall_at_10:.3f}"
        centred = {
            "table": ", centred on the table's mean",
            "subset": f", centred on tiles where {self.centered_on_where}",
            "none": ", uncentred",
        }.get(self.centring, "")
        sizes = (
            f", {_size(self.index_bytes)} on disk, about {_size(self.memory_bytes)} in memory"
            if self.index_bytes is not None and self.memory_bytes is not None
            else ""
        )
        return (
            f"index {self.name!r}: {self.backend} {self.kind} ({self.metric}{centred}) over {self.rows} "
            f"vectors of {self.table} v{self.table_version}, {recall}, built in {self.build_seconds:.1f} s"
            f"{sizes}"
        )

    def save(self, directory: Path | ObjectPath) -> None:
        """Write manifest.json atomically (temp file + rename; one PUT on object storage)."""
        if isinstance(directory, ObjectPath):
            (directory / MANIFEST).write_text(json.dumps(self.to_dict(), indent=1))
            return
        directory.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=directory, prefix=".manifest-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(self.to_dict(), out, indent=1)
        os.replace(temp, directory / MANIFEST)

    @classmethod
    def load(cls, directory: Path | ObjectPath) -> IndexManifest:
        path = directory / MANIFEST
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise EmbedstoreError(
                f"index at {directory} has no readable manifest ({error}); rebuild it"
            ) from None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


def _size(count: int | None) -> str:
    """Bytes in words: 512 B, 3.4 MB, 1.2 GB."""
    value = float(count or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
