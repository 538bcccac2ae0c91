"""Arrow schemas of the store's core tables, their key columns, and the store-format version.

Every table has a single key column, declared to Lance as its (unenforced) primary key. Lance's
`merge_insert` on a declared key detects two writers inserting the same new key at once and retries the
later one; the keyed writes claim their keys that way in a small claims table before appending, which
is what keeps concurrent `ingest` and `embed` runs from duplicating rows (see
`embedstore.storage.keyed_writes`). Tables whose natural key has two parts get a `row_key` column that
joins them.
"""

from __future__ import annotations

import pyarrow as pa

STORE_FORMAT_VERSION = 2
MARKER_FILE = "embedstore.json"

SOURCES, TILES, LABELS, FILES = "sources", "tiles", "labels", "files"
EMBEDDING_PREFIX = "emb__"
ROW_KEY = "row_key"

# Group keys recorded for every tile, so splits can keep a slide / patient / image on one side.
GROUP_KEYS = ("slide", "patient", "image", "dataset", "split")
# How tile pixels are stored: auto = PNG up to 128 px, JPEG above; none = references only.
PIXEL_CODECS = ("auto", "png", "jpeg", "none")

_PRIMARY_KEY = {b"lance-schema:unenforced-primary-key": b"true"}


def key_field(name: str) -> pa.Field:
    """A non-null string column declared as the table's primary key."""
    return pa.field(name, pa.string(), nullable=False, metadata=_PRIMARY_KEY)


def declared_key(schema: pa.Schema) -> str | None:
    """The column a table declares as its primary key, or None (a table written before format 2)."""
    for field in schema:
        if (field.metadata or {}).get(b"lance-schema:unenforced-primary-key", b"").lower() in (b"true", b"1"):
            return field.name
    return None


# `row_key` joins the two parts of a key: "<tile_id>:<task>" for labels, "<tile_id>:<view>" for
# embeddings. Tile ids are hex, so the first separator splits a row_key unambiguously.
ROW_KEY_SEPARATOR = ":"


def label_key(task: str, tile_id: str) -> str:
    """`row_key` of the label of a tile for a task."""
    return f"{tile_id}{ROW_KEY_SEPARATOR}{task}"


SOURCES_SCHEMA = pa.schema(
    [
        key_field("source_id"),
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
        key_field("tile_id"),
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
        key_field(ROW_KEY),  # label_key(task, tile_id)
        pa.field("task", pa.string(), nullable=False),
        pa.field("tile_id", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("origin", pa.string()),  # folder | manifest | points | import
    ]
)

# Every file ingested, with the source its content maps to: byte-identical copies share one source.
FILES_SCHEMA = pa.schema(
    [
        key_field("uri"),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

CORE_SCHEMAS = {SOURCES: SOURCES_SCHEMA, TILES: TILES_SCHEMA, LABELS: LABELS_SCHEMA, FILES: FILES_SCHEMA}


def key_column(table: str) -> str:
    """The key column of a core or embedding table."""
    if table in CORE_SCHEMAS:
        return declared_key(CORE_SCHEMAS[table]) or ""
    return ROW_KEY


def sql_string(value: str) -> str:
    """A SQL string literal (quotes escaped)."""
    return "'" + value.replace("'", "''") + "'"


def task_predicate(task: str) -> str:
    """SQL predicate selecting one task's rows of the labels table."""
    return f"task = {sql_string(task)}"
