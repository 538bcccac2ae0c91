"""Pathology foundation-model presets: UNI, UNI2-h, Virchow(2), H-optimus, GigaPath, kaiko, Phikon, ...

Each preset (catalog.py) records its architecture and constructor arguments, preprocessing, pooling,
dimension, precision, licence and where its weights live; `PresetBackbone` finds the weights offline
(--weights, $EMBEDSTORE_WEIGHTS_<NAME>, the Hugging Face cache) and builds it. Use one as
`--backbone uni2-h`.
"""

from __future__ import annotations

from embedstore.backbones.presets.backbone import PresetBackbone, preset_backbones
from embedstore.backbones.presets.catalog import PRESETS
from embedstore.backbones.presets.layouts import checkpoint_shapes
from embedstore.backbones.presets.records import Preset, ResNetLayout, ViTLayout

PRESETS_BY_NAME = {preset.name: preset for preset in PRESETS}

__all__ = [
    "PRESETS",
    "PRESETS_BY_NAME",
    "Preset",
    "PresetBackbone",
    "ResNetLayout",
    "ViTLayout",
    "checkpoint_shapes",
    "preset_backbones",
]
