"""A trained head on disk: its card (what it was trained on, how, how well) and its weights.

    <store>/heads/<name>/card.json     HeadCard as JSON
                         head.pt       torch.save(estimator.to_state())
                         split.parquet the tiles it trained and validated on (tile_id, split); heads
                                       saved before it have none (their split is unknown)

A head is saved in a temporary directory beside its final place and renamed into it, so a reader sees
the old head or the new one, never a mix. Loading checks the head against the store: a head runs only
on the backbone it was trained on, and only while that table holds vectors of the same weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedstore.core.ids import id_strings
from embedstore.core.location import ObjectPath, StorePath, exclusive, remove_inside
from embedstore.core.reports import JsonReport
from embedstore.core.validation import FileName, invalid
from embedstore.embeddings import EmbeddingTable
from embedstore.storage import saved
from embedstore.storage.catalog import Catalog, HasCatalog, catalog_of
from embedstore.storage.embedding_tables import table_name

from .errors import HeadsError
from .options import HEAD_KINDS

HEADS_DIR = saved.HEADS_DIR  # the folder and file names `embedstore info` reads too
CARD = saved.HEAD_CARD
WEIGHTS = "head.pt"
SPLIT = "split.parquet"
TRAIN, VALIDATION = "train", "validation"  # a tile's side of the head's split (`split` in predictions)
LOCK = ".lock"
TRAIN_COMMAND = "embedstore train-head {root} --backbone {backbone} --task {task} --name {name} --overwrite"


@dataclass
class HeadCard(JsonReport):
    """What a head is: trained on which table version, task and classes, how, and its validation scores."""

    name: str
    kind: str  # linear | mlp
    backbone: str
    weights_sha256: str  # of the backbone's table when the head was trained
    table: str  # emb__<backbone>
    table_version: int
    task: str
    classes: list[str]  # class names; probabilities come in this order
    positive_class: str | None  # binary: classes[1]; else None
    threshold: float  # binary: p(positive) >= threshold -> positive
    params: dict[str, Any]  # the estimator's get_params()
    augment: str  # canonical augmentation spec
    validation: dict[str, float]  # metrics on the validation tiles, at the best epoch
    group_by: str
    tiles_train: int
    tiles_validation: int
    created: str  # ISO time, microseconds: tells one training of a name from the next
    versions: dict[str, str] = field(default_factory=dict)  # embedstore, torch, scikit-learn
    dim: int = 0  # vector width the head takes
    epochs: int = 0  # epochs run (early stopping may end before params["epochs"])
    best_epoch: int = 0  # whose weights were kept
    notes: list[str] = field(default_factory=list)
    labels_version: int | None = None  # of the labels table when training began (None: older cards)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> HeadCard:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})

    def summary(self) -> str:
        scores = ", ".join(
            f"{k} {v:.3f}"
            for k, v in self.validation.items()
            if k in ("auroc", "balanced_accuracy", "macro_f1") and v == v
        )
        threshold = f", threshold {self.threshold:.3f}" if self.positive_class is not None else ""
        return (
            f"head {self.name!r}: {self.kind} on {self.backbone} for task {self.task!r} "
            f"({len(self.classes)} classes: {', '.join(self.classes)}), {self.tiles_train} training / "
            f"{self.tiles_validation} validation tiles by {self.group_by}; validation {scores}{threshold}"
        )


def json_ready(value: Any) -> Any:
    """Nested dicts / lists / numpy scalars as plain JSON values (string keys, lists, NaN as null)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


StoreArg = Catalog | HasCatalog | str | Path  # what heads' entry points take: a Store, a Catalog or a path


def open_store(store: StoreArg) -> Catalog:
    """The catalog of a store given as a Store, a Catalog, or its path (opened)."""
    if isinstance(store, str | Path):
        return Catalog.open(store)
    return catalog_of(store)


def head_class(kind: str):
    """The estimator class of a head kind; HeadsError naming the kinds for another."""
    from .estimators import LinearHead, MLPHead

    classes = {"linear": LinearHead, "mlp": MLPHead}
    if kind not in classes:
        raise HeadsError(f"--head {kind!r} is not a head kind; use one of {', '.join(HEAD_KINDS)}")
    return classes[kind]


def check_name(name: str, flag: str = "--name") -> str:
    """A head name, never a path: it names a directory under <store>/heads and the `pred__<name>` table
    (`embedstore.core.validation.FileName`'s rule); HeadsError, one line, for another."""
    if not FileName().accepts(name):
        raise HeadsError(str(invalid(flag, name, FileName().describe())))
    return name


def heads_root(store: Catalog) -> Path | ObjectPath:
    return store.root / HEADS_DIR


def head_dir(store: Catalog, name: str, flag: str = "--name") -> Path | ObjectPath:
    """<store>/heads/<name>, for a valid name only."""
    return heads_root(store) / check_name(name, flag)


def head_exists(store: Catalog, name: str) -> bool:
    return (head_dir(store, name) / CARD).is_file()


def refuse_existing(store: Catalog, name: str) -> None:
    """HeadsError when a head `name` exists (asking for overwrite)."""
    if head_exists(store, name):
        raise HeadsError(
            f"head {name!r} exists in {store.root}; pass --overwrite (overwrite=True) to replace it, "
            "or choose another --name"
        )


def split_table(train_ids: np.ndarray, validation_ids: np.ndarray) -> pa.Table:
    """The split record: tile_id and split (train | validation); ids as UTF-8 bytes ("S") arrays."""
    ids = [pa.array(id_strings(i), pa.string()) for i in (train_ids, validation_ids)]
    sides = [pa.array([side] * len(i), pa.string()) for side, i in zip((TRAIN, VALIDATION), ids, strict=True)]
    return pa.table({"tile_id": pa.concat_arrays(ids), "split": pa.concat_arrays(sides)})


def _split_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def read_split(store: StoreArg, name: str) -> pa.Table | None:
    """Head `name`'s split record (tile_id, split), or None for a head saved before heads kept one."""
    path = head_dir(open_store(store), name, "--head") / SPLIT
    if not path.is_file():
        return None
    try:
        return pq.read_table(io.BytesIO(path.read_bytes()))
    except (OSError, pa.ArrowInvalid) as error:
        raise HeadsError(f"{path} is damaged ({error}); train the head again with --overwrite") from None


def save_head(
    store: Catalog, card: HeadCard, estimator, overwrite: bool = False, split: pa.Table | None = None
) -> Path | ObjectPath:
    """Write card.json, head.pt and (given) the split record `split_table` under <store>/heads/<name>/
    atomically; returns that directory."""
    import torch

    target = head_dir(store, card.name)
    record = None if split is None else _split_bytes(split)
    if isinstance(target, ObjectPath):
        return _save_to_object_store(store, target, card, estimator.to_state(), overwrite, record)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{card.name}.saving-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        torch.save(estimator.to_state(), staging / WEIGHTS)
        if record is not None:
            (staging / SPLIT).write_bytes(record)
        (staging / CARD).write_text(json.dumps(card.to_dict(), indent=1) + "\n")
        with exclusive(root, LOCK):
            if target.exists():
                if not overwrite:
                    refuse_existing(store, card.name)
                    remove_inside(target, root)  # a directory without a card: an interrupted save
                else:
                    old = root / f".{card.name}.old-{uuid.uuid4().hex[:12]}"
                    os.rename(target, old)
                    os.rename(staging, target)
                    remove_inside(old, root)
                    return target
            os.rename(staging, target)
    finally:
        remove_inside(staging, root)
    return target


def _save_to_object_store(
    store: Catalog, target: ObjectPath, card: HeadCard, state: dict, overwrite: bool, split: bytes | None
) -> ObjectPath:
    """No rename on object storage: the weights go first, the card (one PUT) last makes the head visible."""
    import torch

    if not overwrite:
        refuse_existing(store, card.name)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (target / WEIGHTS).write_bytes(buffer.getvalue())
    if split is not None:
        (target / SPLIT).write_bytes(split)
    elif (target / SPLIT).is_file():
        (target / SPLIT).unlink()  # an older training's record must not stand for this one
    (target / CARD).write_text(json.dumps(card.to_dict(), indent=1) + "\n")
    return target


def read_card(store: StoreArg, name: str) -> HeadCard:
    """The card of head `name`; HeadsError naming the heads there are when it is unknown."""
    store = open_store(store)
    path = head_dir(store, name, "--head") / CARD
    if not path.is_file():
        names = (
            ", ".join(card.name for card in list_heads(store))
            or "none (train one with `embedstore train-head`)"
        )
        raise HeadsError(f"no head {name!r} in {store.root}; heads: {names}")
    try:
        return HeadCard.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise HeadsError(f"{path} is damaged ({error}); train the head again with --overwrite") from None


def load_head(store: StoreArg, name: str, backbone: str | None = None):
    """(card, estimator) of head `name`, checked against the store.

    Refused (HeadsError): an unknown name; `backbone` other than the head's; the backbone's table gone,
    or holding vectors of other weights than the head was trained on.
    """
    store = open_store(store)
    card = read_card(store, name)
    if backbone is not None and table_name(backbone) != table_name(card.backbone):
        raise HeadsError(
            f"head {name!r} was trained on backbone {card.backbone!r}, not {backbone!r}; its scores mean "
            f"nothing on other vectors: use --backbone {card.backbone}, or train a head on {backbone}"
        )
    check_table(store, card)
    import torch

    path = head_dir(store, name, "--head") / WEIGHTS
    try:
        source = io.BytesIO(path.read_bytes()) if isinstance(path, ObjectPath) else path
        state = torch.load(source, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HeadsError(f"{path} cannot be read ({first}); train the head again with --overwrite") from None
    return card, head_class(card.kind).from_state(state)


def check_table(store: Catalog, card: HeadCard) -> None:
    """The head's backbone table must exist and hold vectors of the weights the head was trained on."""
    retrain = TRAIN_COMMAND.format(root=store.root, backbone=card.backbone, task=card.task, name=card.name)
    if not store.has_table(card.table):
        raise HeadsError(
            f"head {card.name!r} needs the embeddings of {card.backbone!r}, which {store.root} lacks; "
            f"run `embedstore embed {store.root} --backbone {card.backbone}`"
        )
    provenance = EmbeddingTable.of(store, card.table).provenance
    if provenance.weights_sha256 != card.weights_sha256:
        raise HeadsError(
            f"head {card.name!r} was trained on vectors of weights sha256 {card.weights_sha256[:12]}…, "
            f"but {card.table} now holds weights {provenance.weights_sha256[:12]}…; retrain it: `{retrain}`"
        )
    if card.dim and provenance.dim != card.dim:
        raise HeadsError(
            f"head {card.name!r} takes {card.dim}-d vectors, {card.table} holds {provenance.dim}-d; "
            f"retrain it: `{retrain}`"
        )


def list_heads(store: StoreArg) -> list[HeadCard]:
    """Cards of the store's heads, by name (damaged ones left out)."""
    store = open_store(store)
    cards = []
    paths: list[StorePath] = sorted(heads_root(store).glob(f"*/{CARD}"))
    for path in paths:
        if path.parent.name.startswith("."):
            continue
        with contextlib.suppress(json.JSONDecodeError, TypeError, OSError):
            cards.append(HeadCard.from_dict(json.loads(path.read_text())))
    return cards
