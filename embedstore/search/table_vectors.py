"""The exact vectors of an index's rows, read from the embedding table by row address when needed.

An IVF-PQ index holds compressed codes only; re-scoring its candidates (and reading a query tile's own
vector) takes those few rows from the table instead of keeping every vector in memory. Each index
position keeps its row's address (fragment, offset): 8 bytes a row, valid while the row's fragment is
not rewritten (appends never do; a compaction or a keyed rewrite does, and `follow` re-reads them).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import EmbedstoreError
from ..embeddings import EmbeddingTable
from ..evaluate.space import VectorSpace
from ..storage.catalog import Catalog


class TableVectors:
    """Prepared (centred, unit) vectors of index positions, read from `table` at `version` by address."""

    def __init__(
        self, catalog: Catalog, table: str, version: int, addresses: np.ndarray, space: VectorSpace
    ) -> None:
        self.catalog, self.table_name, self.space = catalog, table, space
        self.addresses = np.asarray(addresses, dtype=np.uint64)
        self._marks: dict[int, tuple[int, str]] | None
        try:
            self.table = EmbeddingTable.of(catalog, table, version)
            self._marks = self.table.fragment_marks()
        except EmbedstoreError:  # the version was cleaned up (compaction): `follow` finds the rows again
            self.table, self._marks = EmbeddingTable.of(catalog, table), None

    @property
    def version(self) -> int:
        return self.table.version

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """(n, dim) prepared vectors of the index positions `positions`, in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        return self.space.prepare(self.table.take(self.addresses[positions]))

    def extend(self, addresses: np.ndarray) -> None:
        """Positions appended to the index (rows added by an update), in the order added."""
        self.addresses = np.concatenate([self.addresses, np.asarray(addresses, dtype=np.uint64)])

    def follow(self, version: int, tile_ids: np.ndarray) -> bool:
        """Read from `version` on; when a fragment holding indexed rows was rewritten since, find those
        rows' new addresses by their tile ids (one pass over the ids, no vectors). True when re-read."""
        table = self.table.at(version)
        marks = table.fragment_marks()
        used = np.unique(self.addresses[: len(tile_ids)] >> np.uint64(32)).astype(np.int64)
        before = self._marks
        moved = before is None or any(before.get(int(f)) != marks.get(int(f)) for f in used)
        self.table, self._marks = table, marks
        if not moved:
            return False
        addresses, found = table.row_addresses(tile_ids)
        if not found.all():
            raise EmbedstoreError(
                f"{self.table_name} v{version} no longer holds {int((~found).sum())} indexed rows; "
                "rebuild the index"
            )
        self.addresses = addresses
        return True

    @property
    def nbytes(self) -> int:
        return int(self.addresses.nbytes)
