"""L3, the one door to embedding tables: no other module (but the writers and store maintenance) opens an
`emb__` table. `EmbeddingQuery` reads vectors (Arrow, numpy, polars, batches) of a task, a set of tiles or
all; `EmbeddingTable` answers ids, views, dimension, version and provenance (see `query`)."""

from .query import (
    METADATA_COLUMNS,
    EmbeddingArrays,
    EmbeddingQuery,
    EmbeddingTable,
    VectorBatch,
    tile_filter,
    vectors,
)

__all__ = [
    "METADATA_COLUMNS",
    "EmbeddingArrays",
    "EmbeddingQuery",
    "EmbeddingTable",
    "VectorBatch",
    "tile_filter",
    "vectors",
]
