"""The backbones embedstore registers by itself."""

from __future__ import annotations

from embedstore.backbones.base import Backbone
from embedstore.backbones.efficientnet_lite import INPUT_SIZES, EfficientNetLiteBackbone
from embedstore.backbones.handcrafted import HandcraftedBackbone
from embedstore.backbones.presets import preset_backbones
from embedstore.backbones.timm_backbones import TimmRandomBackbone, random_spec

# (architecture, feature dim, input size) of the seeded random baselines; dims are checked by the tests.
RANDOM_BASELINES = (
    ("resnet18", 512, 224),
    ("resnet50", 2048, 224),
    ("vit_small_patch16_224", 384, 224),
)


def builtin_backbones() -> list[Backbone]:
    """Built-in backbones, cheap to create (nothing is loaded until build())."""
    return [
        *(EfficientNetLiteBackbone(variant) for variant in sorted(INPUT_SIZES)),
        *(TimmRandomBackbone(random_spec(*row)) for row in RANDOM_BASELINES),
        HandcraftedBackbone(),
        *preset_backbones(),
    ]
