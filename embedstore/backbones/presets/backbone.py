"""PresetBackbone: a pathology preset as a registry backbone (weights found offline, provenance, layers)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from embedstore.backbones.base import Backbone, file_sha256
from embedstore.backbones.presets.builders import (
    PresetNet,
    build_package_model,
    build_trunk,
    load_trunk,
    missing_extra,
)
from embedstore.backbones.presets.records import Preset
from embedstore.backbones.presets.weights import find_weights
from embedstore.backbones.spec import BackboneSpec
from embedstore.core.errors import BackboneError

TIMM_FAMILIES = ("timm-vit", "hf-vit", "hf-dinov2", "timm-resnet-trunc")


def preset_spec(preset: Preset, weights_source: str = "") -> BackboneSpec:
    """The registry spec of a preset."""
    gated = ", gated" if preset.gated else ""
    return BackboneSpec(
        key=preset.name,
        architecture=preset.architecture,
        dim=preset.dim,
        input_size=preset.input_size,
        mean=preset.mean,
        std=preset.std,
        mpp=preset.mpp,
        weights_source=weights_source or f"{preset.repo} (Hugging Face{gated}): not found here",
        licence=preset.licence,
        description=preset.title,
        preset=f"{preset.name} v{preset.version}",
        pooling=preset.pooling,
        gated=preset.gated,
        crop=preset.crop if preset.crop != preset.input_size else 0,
    )


class _CentreCrop(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        top, left = max(0, (height - self.size) // 2), max(0, (width - self.size) // 2)
        return x[..., top : top + self.size, left : left + self.size]


class PresetBackbone(Backbone):
    """A preset with its weights from `weights` (file or folder), an environment variable or the HF cache.

    Where the weights are is looked up each time it matters (listing, building, hashing), so a cache filled
    after start-up is seen. The weights hash is the sha256 of the weights file's bytes.
    """

    def __init__(self, preset: Preset, weights: str | os.PathLike[str] | None = None) -> None:
        super().__init__(preset_spec(preset))
        self.preset = preset
        self.weights = weights
        if weights is not None:
            self._locate()  # a bad --weights path fails now, in one line

    def _locate(self) -> tuple[Path | None, str]:
        found, where = find_weights(self.preset, self.weights)
        self.spec = preset_spec(self.preset, where if found is not None else "")
        return found, where

    def weights_file(self) -> Path:
        """The weights file, or a BackboneError saying what to fetch."""
        problem = missing_extra(self.preset)
        if problem:
            raise BackboneError(problem)
        found, message = self._locate()
        if found is None:
            raise BackboneError(f"preset {self.preset.name!r}: {message}")
        return found

    def available(self) -> tuple[bool, str]:
        problem = missing_extra(self.preset)
        if problem:
            return False, problem
        found, message = self._locate()
        return (True, "") if found is not None else (False, message)

    def weights_sha256(self) -> str:
        return file_sha256(self.weights_file())

    def _compute_sha256(self) -> str:
        return self.weights_sha256()

    def _require_available(self) -> None:
        self.weights_file()

    def _create(self, with_classifier: bool) -> nn.Module:
        if with_classifier:
            raise self._no_classifier()
        weights = self.weights_file()
        if self.preset.family in TIMM_FAMILIES:
            model = load_trunk(self.preset, weights)
        else:
            model = build_package_model(self.preset, weights)
        return PresetNet(self.preset, model.float().eval()).eval()

    def trunk(self, device: torch.device | None = None, with_weights: bool = True) -> nn.Module:
        """The timm network under the pooling (for layer keys): loaded, or random on `device`."""
        if self.preset.family not in TIMM_FAMILIES:
            raise BackboneError(
                f"preset {self.preset.name!r} is built by its own package; layer keys (KEY@stageN) need a "
                "timm preset"
            )
        if with_weights:
            return load_trunk(self.preset, self.weights_file()).float().eval()
        device = device or torch.device("cpu")
        with device:
            return build_trunk(self.preset, init=device.type != "meta").eval()

    def crop_module(self) -> nn.Module:
        """The preset's centre crop, applied before the trunk."""
        return _CentreCrop(self.preset.crop)


def preset_backbones() -> list[Backbone]:
    """One backbone per catalogued preset (cheap: nothing is read until used)."""
    from embedstore.backbones.presets.catalog import PRESETS

    return [PresetBackbone(preset) for preset in PRESETS]
