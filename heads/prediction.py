"""A head's predictions for every tile its backbone embedded, kept in the table `pred__<name>`.

    report = predict(store, "tumour-uni-linear")     # predicts tiles not predicted yet
    export_top(store, "tumour-uni-linear", "top.csv", n=100)

The table: tile_id (the key), score (float32: p(positive) for a binary head, else the probability of the
predicted class), probabilities (float32 per class, in the card's order), label (the predicted class,
with the head's threshold) and split (train | validation when the head trained or validated on the tile,
else none; null for a head saved without its split record). A table written before the split column
keeps its columns. Predicting is incremental: a run streams the backbone's vectors (view 0),
skips tiles already in the table and inserts the rest by key, so a second run writes nothing, tiles
embedded later are predicted by the next run, and two runs at once write each tile once. A table written
by an earlier training of the same name (retrained with --overwrite) is rebuilt.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from embedstore.core.location import exclusive
from embedstore.core.reports import JsonReport
from embedstore.core.schema import SOURCES, TILES, key_field
from embedstore.core.validation import Interval, output_file
from embedstore.embeddings import EmbeddingQuery, vectors
from embedstore.storage.catalog import Catalog

from .card import (
    LOCK,
    TRAIN,
    VALIDATION,
    HeadCard,
    StoreArg,
    heads_root,
    load_head,
    open_store,
    read_card,
    read_split,
)
from .errors import HeadsError
from .options import PREDICT_DEFAULTS
from .tile_batches import READ_BATCH, TileIds, checked

PREDICTIONS_PREFIX = "pred__"
COMMIT_ROWS = 65_536  # rows per insert (one table version each)
HEAD_KEY = b"heads.head"
CREATED_KEY = b"heads.created"  # the card's `created`: which training of the head wrote the rows
CLASSES_KEY = b"heads.classes"
EXPORT_COLUMNS = ("source", "source_id", "slide", "x", "y", "size0", "level", "patient", "image", "dataset")


@dataclass
class PredictReport(JsonReport):
    head: str
    table: str
    new_rows: int  # inserted by this run
    total_rows: int  # in the table after it
    rebuilt: bool = False  # the table held an earlier training's predictions and was replaced
    seconds: float = 0.0

    def summary(self) -> str:
        rebuilt = " (rebuilt: the head was retrained)" if self.rebuilt else ""
        return (
            f"head {self.head!r}: {self.new_rows} new prediction(s), {self.total_rows} in {self.table}"
            f"{rebuilt} ({self.seconds:.1f} s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def predictions_table(name: str) -> str:
    return f"{PREDICTIONS_PREFIX}{name}"


def predictions_schema(card: HeadCard) -> pa.Schema:
    """tile_id (key), score, probabilities (one per class), label, split; the metadata names the
    training."""
    metadata = {
        HEAD_KEY: card.name.encode(),
        CREATED_KEY: card.created.encode(),
        CLASSES_KEY: json.dumps(card.classes).encode(),
    }
    return pa.schema(
        [
            key_field("tile_id"),
            pa.field("score", pa.float32()),
            pa.field("probabilities", pa.list_(pa.float32(), len(card.classes))),
            pa.field("label", pa.string()),
            pa.field("split", pa.string()),
        ],
        metadata=metadata,
    )


def predict(
    store: StoreArg,
    name: str,
    batch_size: int = READ_BATCH,
    progress: bool = False,
    backbone: str | None = None,
) -> PredictReport:
    """Predict every tile of the head's backbone table not yet in `pred__<name>`; see the module doc.

    backbone: when given, must be the head's (else HeadsError); batch_size: rows per Arrow batch read.
    """
    checked("--batch-size", batch_size, Interval(1, integer=True))
    store = open_store(store)
    store.require_writable()
    started = time.perf_counter()
    card, estimator = load_head(store, name, backbone)
    table = predictions_table(card.name)
    rebuilt = _prepare_table(store, card, table)
    done = TileIds(store.read(table, columns=["tile_id"]).column("tile_id"))
    query = EmbeddingQuery.of(store, card.backbone).columns()
    total = query.count() if progress else None
    bar = tqdm(total=total, desc=f"predict {card.name}", unit="tile", disable=not progress, leave=False)
    schema = store.dataset(table).schema
    sides = SplitSides.of(store, card.name)
    pending: list[pa.Table] = []
    held = new_rows = 0
    try:
        for batch in query.to_batches(batch_size):
            bar.update(batch.num_rows)
            _, found = done.lookup(batch.column("tile_id"))
            if found.all():
                continue
            batch = batch.filter(pa.array(~found))
            x = np.array(vectors(batch.column("vector")))  # writable, for torch
            ids = batch.column("tile_id")
            pending.append(_rows(card, estimator.predict_proba(x), ids, schema, sides.of_tiles(ids)))
            held += batch.num_rows
            if held >= COMMIT_ROWS:
                new_rows += store.insert_missing(table, pa.concat_tables(pending))
                pending, held = [], 0
        if pending:
            new_rows += store.insert_missing(table, pa.concat_tables(pending))
    finally:
        bar.close()
    return PredictReport(
        card.name, table, new_rows, store.count(table), rebuilt, round(time.perf_counter() - started, 3)
    )


def _prepare_table(store: Catalog, card: HeadCard, table: str) -> bool:
    """Create the predictions table, or replace one written by another training; True when replaced."""
    if store.has_table(table) and _written_by(store, table) == card.created:
        return False
    with exclusive(heads_root(store), LOCK):  # one process replaces it; the others then find it current
        if not store.has_table(table):
            store.create_table(table, predictions_schema(card))
            return False
        if _written_by(store, table) == card.created:
            return False
        store.drop_table(table)
        store.create_table(table, predictions_schema(card))
        return True


def _written_by(store: Catalog, table: str) -> str | None:
    metadata = store.dataset(table).schema.metadata or {}
    created = metadata.get(CREATED_KEY)
    return None if created is None else created.decode()


class SplitSides:
    """Which side of the head's split each tile was on: train, validation or none (None: unknown)."""

    def __init__(self, train: TileIds | None, validation: TileIds | None) -> None:
        self.train, self.validation = train, validation

    @classmethod
    def of(cls, store: Catalog, name: str) -> SplitSides:
        record = read_split(store, name)
        if record is None:
            return cls(None, None)
        sides = record.column("split")
        ids = record.column("tile_id")
        return cls(
            TileIds(ids.filter(pc.equal(sides, TRAIN))), TileIds(ids.filter(pc.equal(sides, VALIDATION)))
        )

    @property
    def known(self) -> bool:
        return self.train is not None

    def of_tiles(self, tile_ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """train | validation | none per tile (all null when the split is unknown)."""
        if self.train is None or self.validation is None:
            return pa.nulls(len(tile_ids), pa.string())
        side = np.full(len(tile_ids), "none", dtype=object)
        side[self.validation.lookup(tile_ids)[1]] = VALIDATION
        side[self.train.lookup(tile_ids)[1]] = TRAIN
        return pa.array(side, pa.string())


def _rows(
    card: HeadCard, probabilities: np.ndarray, tile_ids: pa.Array, schema: pa.Schema, sides: pa.Array
) -> pa.Table:
    probabilities = np.asarray(probabilities, dtype=np.float32)
    classes = np.asarray(card.classes, dtype=object)
    if card.positive_class is not None:
        score = probabilities[:, 1]
        labels = classes[(score >= card.threshold).astype(np.int64)]
    else:
        predicted = probabilities.argmax(axis=1)
        score = probabilities[np.arange(len(predicted)), predicted]
        labels = classes[predicted]
    width = probabilities.shape[1]
    columns = {
        "tile_id": tile_ids.cast(pa.string()),
        "score": pa.array(score, pa.float32()),
        "probabilities": pa.FixedSizeListArray.from_arrays(
            pa.array(probabilities.reshape(-1), pa.float32()), width
        ),
        "label": pa.array(labels.tolist(), pa.string()),
        "split": sides,
    }
    return pa.table([columns[name] for name in schema.names], schema=schema)  # an older table: no split


# -- exporting the top tiles ------------------------------------------------------------------------------


def export_top(
    store: StoreArg,
    name: str,
    path: str | Path,
    n: int = PREDICT_DEFAULTS["top"],
    class_name: str | None = PREDICT_DEFAULTS["class_name"],
) -> Path:
    """Write a CSV of the `n` tiles with the highest score (or p(`class_name`)), best first: rank,
    tile_id, label, score, p(<class>) per class and the tile's source, position and group columns."""
    checked("-n", n, Interval(1, integer=True))
    path = output_file("--export", path)  # checked before reading; the folder is made when writing
    store = open_store(store)
    card = read_card(store, name)
    table = predictions_table(card.name)
    predict_command = f"`embedstore predict {store.root} --head {card.name}`"
    if not store.has_table(table):
        raise HeadsError(f"head {card.name!r} has no predictions yet; run {predict_command} first")
    if _written_by(store, table) != card.created:
        raise HeadsError(
            f"{table} holds predictions of an earlier training of head {card.name!r}; run {predict_command}"
        )
    if class_name is not None and class_name not in card.classes:
        raise HeadsError(
            f"head {card.name!r} has no class {class_name!r}; its classes: {', '.join(card.classes)}"
        )
    predictions = store.read(table)
    probabilities = _matrix(predictions.column("probabilities"), len(card.classes))
    if class_name is None:
        scores = predictions.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        scores = probabilities[:, card.classes.index(class_name)].astype(np.float64)
    ids = predictions.column("tile_id").to_numpy(zero_copy_only=False).astype(str)
    order = np.lexsort((ids, -scores))[:n]  # highest first, ties by tile id
    chosen = predictions.take(pa.array(order))
    tiles = store.read(TILES, columns=["tile_id", *[c for c in EXPORT_COLUMNS if c != "source"]])
    at = pc.index_in(chosen.column("tile_id"), value_set=tiles.column("tile_id").combine_chunks())
    sources = store.read(SOURCES, columns=["source_id", "uri"]).to_pydict()
    uri = dict(zip(sources["source_id"], sources["uri"], strict=True))
    metadata = tiles.take(at.fill_null(0)).to_pydict() if len(tiles) else {}
    present = at.is_valid().to_pylist()
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    header = ["rank", "tile_id", "label", "score", *[f"p({c})" for c in card.classes], *EXPORT_COLUMNS]
    labels = chosen.column("label").to_pylist()
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for rank, row in enumerate(order.tolist()):
            meta = {
                c: (metadata[c][rank] if present[rank] else None) for c in EXPORT_COLUMNS if c != "source"
            }
            meta["source"] = uri.get(meta["source_id"]) if meta["source_id"] is not None else None
            writer.writerow(
                [
                    rank + 1,
                    ids[row],
                    labels[rank],
                    f"{scores[row]:.6g}",
                    *[f"{p:.6g}" for p in probabilities[row]],
                    *["" if meta[c] is None else meta[c] for c in EXPORT_COLUMNS],
                ]
            )
    return out


def _matrix(column: pa.ChunkedArray, width: int) -> np.ndarray:
    if column.num_chunks == 0 or len(column) == 0:
        return np.empty((0, width), np.float32)
    values = pc.list_flatten(column.combine_chunks()) if column.num_chunks else column
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
