"""Arrow schemas of the store's core tables and the store-format version."""

from __future__ import annotations

import pyarrow as pa

STORE_FORMAT_VERSION = 1
MARKER_FILE = "embedstore.json"

SOURCES, TILES, LABELS = "sources", "tiles", "labels"
EMBEDDING_PREFIX = "emb__"

# Group keys recorded for every tile, so splits can keep a slide / patient / image on one side.
GROUP_KEYS = ("slide", "patient", "image", "dataset", "split")

SOURCES_SCHEMA = pa.schema(
    [
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("kind", pa.string()),  # slide | image | points
        pa.field("format", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("level_count", pa.int32()),
        pa.field("mpp", pa.float64()),
        pa.field("mpp_origin", pa.string()),  # metadata | override | none
        pa.field("fingerprint", pa.string()),
        pa.field("status", pa.string()),  # ok | failed
        pa.field("error", pa.string()),
        pa.field("n_tiles", pa.int64()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

TILES_SCHEMA = pa.schema(
    [
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("source_id", pa.string()),
        pa.field("x", pa.int64()),  # top-left, level-0 pixels (negative when a point tile is padded)
        pa.field("y", pa.int64()),
        pa.field("level", pa.int32()),  # pyramid level the pixels were read from
        pa.field("size0", pa.int64()),  # side of the tile's region in level-0 pixels
        pa.field("width", pa.int32()),  # stored pixel size
        pa.field("height", pa.int32()),
        pa.field("mpp", pa.float64()),  # µm/px of the stored pixels, null when unknown
        pa.field("tissue_fraction", pa.float32()),
        *[pa.field(key, pa.string()) for key in GROUP_KEYS],
        pa.field("pixels", pa.binary()),  # encoded PNG/JPEG, null with --no-pixels
        pa.field("pixel_format", pa.string()),
    ]
)

LABELS_SCHEMA = pa.schema(
    [
        pa.field("task", pa.string(), nullable=False),
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("origin", pa.string()),  # folder | manifest | points | import
    ]
)

CORE_SCHEMAS = {SOURCES: SOURCES_SCHEMA, TILES: TILES_SCHEMA, LABELS: LABELS_SCHEMA}


def task_predicate(task: str) -> str:
    """SQL predicate selecting one task's rows of the labels table (quotes escaped)."""
    return "task = '" + task.replace("'", "''") + "'"
