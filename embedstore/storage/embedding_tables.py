"""Embedding tables: their names, Arrow schema, and the provenance recorded in their schema metadata."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from ..core.errors import BackboneError, EmbedstoreError
from ..core.schema import EMBEDDING_PREFIX, ROW_KEY, key_field

PROVENANCE_KEY = b"embedstore.provenance"  # the whole record, as JSON
FLAT_KEYS = ("backbone", "weights_sha256", "dim", "precision", "store_dtype")  # also stored one per key
STORE_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def dtype_name(value_type: pa.DataType) -> str:
    """numpy's name for an Arrow float type: float32, float16, float64."""
    return {"float": "float32", "halffloat": "float16", "double": "float64"}.get(
        str(value_type), str(value_type)
    )


def table_name(key: str) -> str:
    """`emb__<key>` with every character outside [A-Za-z0-9_] replaced by `_`; a layer key is spelt
    canonically first (`x@stage6+stage4` and `x@stage4+6` name one table)."""
    return EMBEDDING_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", _canonical_layers(key))


def _canonical_layers(key: str) -> str:
    base, at, layer = key.partition("@")
    numbers = re.fullmatch(r"stage(\d+)((?:\+(?:stage)?\d+)*)", layer) if at else None
    if numbers is None:
        return key
    stages = sorted({int(n) for n in re.findall(r"\d+", layer)})
    return f"{base}@stage" + "+".join(map(str, stages))


@dataclass(frozen=True)
class Provenance:
    """What produced the vectors of one embedding table; stored in its schema metadata."""

    backbone: str
    weights_sha256: str
    dim: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str
    precision: str
    store_dtype: str
    augment: tuple[str, ...] = ()  # () until a run writes augmented views
    augment_version: int = 1
    weights_source: str = ""
    mpp: float | None = None
    layer: str = ""  # "" = the backbone's final features, else its pooled inner stages, e.g. "stage4+5+6"
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    preset: str = ""  # "NAME vN" when the backbone is a pathology preset, else ""
    pooling: str = ""  # the preset's pooling ("cls", "cls+mean", ...), else ""
    crop: int = 0  # the preset's centre crop inside the network (0: none recorded)

    @classmethod
    def given(cls, key: str, dim: int) -> Provenance:
        """The provenance of vectors handed in rather than computed here (benchmarks, tests): no
        weights, no preprocessing."""
        return cls(
            backbone=key,
            weights_sha256="0" * 64,
            dim=dim,
            input_size=32,
            mean=(0.0,) * 3,
            std=(1.0,) * 3,
            resize="bicubic",
            precision="fp32",
            store_dtype="float32",
        )

    def preprocessing(self) -> dict[str, Any]:
        """The part that decides which pixels the network sees."""
        recipe: dict[str, Any] = {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
        }
        if self.crop:
            recipe["crop"] = self.crop
        return recipe

    def to_metadata(self) -> dict[bytes, bytes]:
        record = asdict(self)
        metadata = {PROVENANCE_KEY: json.dumps(record, sort_keys=True).encode()}
        metadata.update({f"embedstore.{k}".encode(): str(record[k]).encode() for k in FLAT_KEYS})
        metadata[b"embedstore.preprocessing"] = json.dumps(self.preprocessing(), sort_keys=True).encode()
        metadata[b"embedstore.augment"] = ",".join(self.augment).encode()
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None) -> Provenance | None:
        if not metadata or PROVENANCE_KEY not in metadata:
            return None
        record = json.loads(metadata[PROVENANCE_KEY])
        for key in ("mean", "std", "augment"):
            record[key] = tuple(record.get(key) or ())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in record.items() if k in known})


def embedding_schema(provenance: Provenance) -> pa.Schema:
    """row_key (the key: tile_id:view), tile_id, view (0 = the tile, 1..K = augmented copies), vector."""
    return pa.schema(
        [
            key_field(ROW_KEY),
            pa.field("tile_id", pa.string(), nullable=False),
            pa.field("view", pa.int16(), nullable=False),
            pa.field("vector", pa.list_(STORE_DTYPES[provenance.store_dtype], provenance.dim)),
        ],
        metadata=provenance.to_metadata(),
    )


def recorded_provenance(schema: pa.Schema, name: str) -> Provenance:
    """The provenance an existing table's schema records; EmbedstoreError if it records none."""
    found = Provenance.from_metadata(schema.metadata)
    if found is None:
        raise EmbedstoreError(
            f"table {name!r} records no embedstore provenance; it was not written by `embed`"
        )
    return found


def check_compatible(recorded: Provenance, wanted: Provenance, name: str, views: int) -> None:
    """Refuse to add vectors that would not be comparable with those already in the table."""
    key = wanted.backbone
    if recorded.weights_sha256 != wanted.weights_sha256:
        raise BackboneError(
            f"table {name!r} holds vectors from weights sha256 {recorded.weights_sha256[:12]}…, "
            f"but {key!r} now has weights {wanted.weights_sha256[:12]}…; "
            f"use a new key (e.g. '{key}-v2') for other weights"
        )
    if recorded.preset != wanted.preset:
        raise BackboneError(
            f"table {name!r} was embedded with preset {recorded.preset or 'none'!r}, "
            f"but {key!r} is now {wanted.preset or 'no preset'!r}; use a new key"
        )
    if recorded.layer != wanted.layer:
        raise BackboneError(
            f"table {name!r} holds features of layer {recorded.layer or 'final'!r}, "
            f"but {key!r} gives layer {wanted.layer or 'final'!r}; use another key"
        )
    if recorded.dim != wanted.dim:
        raise BackboneError(f"table {name!r} holds {recorded.dim}-d vectors but {key!r} gives {wanted.dim}-d")
    if recorded.preprocessing() != wanted.preprocessing():
        raise BackboneError(
            f"table {name!r} was embedded with preprocessing {recorded.preprocessing()}, "
            f"but {key!r} now asks for {wanted.preprocessing()}; use a new key for the new preprocessing"
        )
    if recorded.precision != wanted.precision:
        raise EmbedstoreError(
            f"table {name!r} was embedded in {recorded.precision}; pass --precision {recorded.precision} "
            "to add to it (mixing precisions in one table is refused)"
        )
    if recorded.store_dtype != wanted.store_dtype:
        raise EmbedstoreError(
            f"table {name!r} stores {recorded.store_dtype} vectors; pass --store-dtype {recorded.store_dtype}"
        )
    if views > 0 and recorded.augment and recorded.augment != wanted.augment:
        raise EmbedstoreError(
            f"table {name!r} holds views augmented with {','.join(recorded.augment)}; "
            f"pass --augment {','.join(recorded.augment)} to add views to it"
        )
