"""Backbones: feature extractors named by `architecture.tag` keys, built offline from local weights.

    from embedstore.backbones import get_backbone, list_backbones
    bb = get_backbone("tf_efficientnet_lite0.in1k")
    model = bb.build()              # raw 0..255 pixels (B, 3, S, S) -> (B, bb.spec.dim) float32 features
    bb.weights_sha256()             # provenance

Weights are never downloaded: they come from installed packages, local files or directories, or the local
Hugging Face cache. Plugins register more backbones through the "embedstore.backbones" entry point group.
`KEY@stage5` / `KEY@stage4+5+6` name inner stages of a timm backbone (each pooled, then concatenated);
`backbone_layers(KEY)` lists them with their widths.
"""

from __future__ import annotations

from embedstore.backbones.base import Backbone, FactoryBackbone, PixelInput
from embedstore.backbones.describe import describe_backbones, format_backbones
from embedstore.backbones.registry import (
    ENTRY_POINT_GROUP,
    backbone_layers,
    get_backbone,
    list_backbones,
    load_entry_points,
    register_backbone,
    registered_backbones,
    unregister_backbone,
)
from embedstore.backbones.spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "BackboneSpec",
    "FactoryBackbone",
    "PixelInput",
    "backbone_layers",
    "describe_backbones",
    "format_backbones",
    "get_backbone",
    "list_backbones",
    "load_entry_points",
    "register_backbone",
    "registered_backbones",
    "unregister_backbone",
]
