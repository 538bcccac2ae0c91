"""BackboneSpec: the record that describes one backbone (architecture + weights + preprocessing)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from embedstore.core.errors import BackboneError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


def _triple(name: str, value: Any, key: str) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except TypeError:
        triple = ()
    if len(triple) != 3:
        raise BackboneError(
            f"backbone {key!r}: {name} must be 3 numbers (one per RGB channel), got {value!r}"
        )
    return triple


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is and how it wants its pixels.

    key: "architecture.tag" (timm style), or "hf-hub:org/name".
    dim: length of the feature vector the built module returns.
    input_size: side of the square input, in pixels.
    mean, std: per-channel normalisation in [0, 1] pixel units, applied inside the module.
    mpp: the microns per pixel the weights were trained at, or None (natural images / unknown).
    weights_source: where the weights come from, for people (file path, package, "random init ...").
    """

    key: str
    architecture: str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mpp: float | None = None
    weights_source: str = ""
    licence: str = "unknown"
    description: str = ""
    preset: str = ""  # "NAME v1" for a pathology preset (its key need not have a tag), else ""
    pooling: str = ""  # how the vector is made from the network's output, when a preset defines it
    gated: bool = False  # the weights' repository asks users to accept terms and log in first
    crop: int = 0  # a centre crop the network takes after the resize to input_size (0: none)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip() or any(c.isspace() for c in self.key):
            raise BackboneError(
                f"backbone key {self.key!r} is invalid; use 'architecture.tag' without spaces"
            )
        if not self.key.startswith("hf-hub:") and "." not in self.key and not self.preset:
            raise BackboneError(
                f"backbone key {self.key!r} has no tag; use 'architecture.tag', e.g. 'resnet50.mylab'"
            )
        mean = _triple("mean", self.mean, self.key)
        std = _triple("std", self.std, self.key)
        if min(std) <= 0:
            raise BackboneError(f"backbone {self.key!r}: std must be positive, got {std}")
        if int(self.dim) <= 0 or int(self.input_size) <= 0:
            raise BackboneError(f"backbone {self.key!r}: dim and input_size must be positive integers")
        if self.mpp is not None and float(self.mpp) <= 0:
            raise BackboneError(f"backbone {self.key!r}: mpp must be positive or None, got {self.mpp}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "mpp", None if self.mpp is None else float(self.mpp))

    @property
    def tag(self) -> str:
        """The part of the key after the first dot ("" for hf-hub and preset keys)."""
        if self.key.startswith("hf-hub:") or "." not in self.key:
            return ""
        return self.key.split(".", 1)[1]

    def replace(self, **changes: Any) -> BackboneSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out
