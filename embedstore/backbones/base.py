"""The Backbone interface, the pixel-input wrapper every built module shares, and hashing helpers."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from embedstore.backbones.spec import BackboneSpec
from embedstore.core.errors import BackboneError

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) so a file is read once."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    cache_key = (real, stat.st_size, stat.st_mtime_ns)
    if cache_key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _FILE_HASHES[cache_key] = digest.hexdigest()
    return _FILE_HASHES[cache_key]


def state_dict_sha256(state: Mapping[str, torch.Tensor], prefix: str = "") -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted name order."""
    digest = hashlib.sha256(prefix.encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class PixelInput(nn.Module):
    """Raw pixels in, features out: x.float() / 255, (x - mean) / std, then `net`, output as float32.

    Accepts uint8 or float tensors (B, 3, S, S) holding 0..255 values, in any memory format.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected pixels shaped (B, 3, S, S), got {tuple(x.shape)}")
        x = x.float() / 255.0
        x = (x - self.mean) / self.std
        return self.net(x).float()


class Backbone(ABC):
    """One backbone: its spec, whether it can run here, its weights hash, and a way to build it.

    Subclasses implement `_create` (a network taking normalised float input) and `_compute_sha256`;
    they may override `available`.
    """

    def __init__(self, spec: BackboneSpec) -> None:
        self.spec = spec
        self._sha256: str | None = None

    def available(self) -> tuple[bool, str]:
        """(True, "") when this backbone can be built offline right now, else (False, why)."""
        return True, ""

    def weights_sha256(self) -> str:
        """sha256 identifying the weights (computed once, then cached)."""
        if self._sha256 is None:
            self._require_available()
            self._sha256 = self._compute_sha256()
        return self._sha256

    def build(self, with_classifier: bool = False) -> nn.Module:
        """An eval-mode float32 CPU module: raw 0..255 pixels (B, 3, S, S) -> (B, dim) features.

        with_classifier=True returns class logits instead, where the weights include a classifier.
        """
        self._require_available()
        net = self._create(with_classifier)
        return PixelInput(net, self.spec.mean, self.spec.std).float().cpu().eval()

    @abstractmethod
    def _create(self, with_classifier: bool) -> nn.Module:
        """The network on normalised float input."""

    @abstractmethod
    def _compute_sha256(self) -> str:
        """The weights hash (uncached)."""

    def _require_available(self) -> None:
        ok, why = self.available()
        if not ok:
            raise BackboneError(f"backbone {self.spec.key!r} cannot be used on this machine: {why}")

    def _no_classifier(self) -> BackboneError:
        return BackboneError(
            f"backbone {self.spec.key!r} has no classifier; call build() without with_classifier"
        )

    def __repr__(self) -> str:
        spec = self.spec
        return f"{type(self).__name__}({spec.key!r}, dim={spec.dim}, input_size={spec.input_size})"


class FactoryBackbone(Backbone):
    """A backbone defined by a spec and a zero-argument factory returning the feature network.

    The factory's network receives normalised float input (mean/std already applied) and returns
    (B, spec.dim) features. Its weights hash is the hash of the built network's state_dict, unless given.
    """

    def __init__(
        self, spec: BackboneSpec, factory: Callable[[], nn.Module], weights_sha256: str | None = None
    ) -> None:
        super().__init__(spec)
        if not callable(factory):
            raise BackboneError(
                f"backbone {spec.key!r}: factory must be callable, got {type(factory).__name__}"
            )
        self._factory = factory
        self._sha256 = weights_sha256

    def _create(self, with_classifier: bool) -> nn.Module:
        if with_classifier:
            raise self._no_classifier()
        net = self._factory()
        if not isinstance(net, nn.Module):
            raise BackboneError(
                f"backbone {self.spec.key!r}: its factory returned {type(net).__name__}, "
                "not a torch.nn.Module"
            )
        return net

    def _compute_sha256(self) -> str:
        return state_dict_sha256(self._create(False).state_dict())


def existing_path(path: str | os.PathLike[str], what: str) -> Path:
    """The path as a Path, or a BackboneError saying it does not exist."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise BackboneError(f"{what} {str(resolved)!r} does not exist; check the path given to --weights")
    return resolved
