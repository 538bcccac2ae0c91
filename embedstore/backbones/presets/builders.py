"""One builder per preset family: the network (random or from a checkpoint) and the pooling that makes the
vector the authors define."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from embedstore.backbones.checkpoints import check_fits, read_state_dict
from embedstore.backbones.presets.convert import hf_vit_to_timm
from embedstore.backbones.presets.records import Preset
from embedstore.core.errors import BackboneError

# The import name of each optional extra's package, and what to install.
EXTRA_PACKAGES = {"conch": "conch", "musk": "musk"}
_VIT_FAMILIES = ("timm-vit", "hf-vit", "hf-dinov2")


def missing_extra(preset: Preset) -> str:
    """ "" when the preset's optional package is importable, else the one-line instruction."""
    if not preset.extra:
        return ""
    module = EXTRA_PACKAGES[preset.extra]
    if importlib.util.find_spec(module) is not None:
        return ""
    return (
        f"preset {preset.name!r} needs the {module!r} package, which is not installed; "
        f"pip install 'embedstore[{preset.extra}]'"
    )


def timm_kwargs(preset: Preset, depth: int | None = None) -> dict[str, Any]:
    """The preset's constructor arguments with named layers resolved to classes."""
    from functools import partial

    import timm.layers

    kwargs = dict(preset.kwargs)
    if "mlp_layer" in kwargs:
        kwargs["mlp_layer"] = getattr(timm.layers, kwargs["mlp_layer"])
    if "act_layer" in kwargs:
        kwargs["act_layer"] = getattr(nn, kwargs["act_layer"])
    if "norm_eps" in kwargs:
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=kwargs.pop("norm_eps"))
    if depth is not None:
        kwargs["depth"] = depth
    return kwargs


def build_trunk(preset: Preset, depth: int | None = None, init: bool = True) -> nn.Module:
    """The preset's timm network with random weights (ViTs: headless, all tokens out; ResNet: whole).

    init=False skips timm's ViT weight initialisation: for networks whose weights are loaded next, or built
    on the meta device (where the truncated-normal init is slow and pointless)."""
    import timm

    if preset.family in _VIT_FAMILIES:
        kwargs = {"num_classes": 0, "global_pool": "", **timm_kwargs(preset, depth)}
        if not init:
            kwargs["weight_init"] = "skip"
        return timm.create_model(preset.architecture, pretrained=False, **kwargs)
    if preset.family == "timm-resnet-trunc":
        return timm.create_model(preset.architecture, pretrained=False)
    raise BackboneError(f"preset {preset.name!r} is built by its package, not by timm")


def trunk_state(preset: Preset, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """A checkpoint in the preset's published naming, renamed to the trunk's."""
    if preset.checkpoint_format in ("hf-vit", "hf-dinov2"):
        return hf_vit_to_timm(state, source)
    return state


def load_trunk(preset: Preset, weights: Path) -> nn.Module:
    """The trunk with the checkpoint loaded strictly; a tensor that does not fit is named first."""
    state = trunk_state(preset, read_state_dict(weights), str(weights))
    with torch.device("meta"):  # no random init of weights about to be replaced (minutes for a ViT-g)
        model = build_trunk(preset, init=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key in [k for k in expected if k.endswith("num_batches_tracked") and k not in state]:
        state[key] = torch.zeros((), dtype=torch.long)
    check_fits(expected, {k: tuple(v.shape) for k, v in state.items()}, str(weights), preset.name)
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # a buffer outside the state dict
        model = build_trunk(preset)
        model.load_state_dict(state, strict=True)
    return model


def build_package_model(preset: Preset, weights: Path | None) -> nn.Module:
    """CONCH / MUSK, built by their own packages (the extra must be installed)."""
    problem = missing_extra(preset)
    if problem:
        raise BackboneError(problem)
    if preset.family == "conch":
        if weights is None:
            raise BackboneError(f"preset {preset.name!r} builds only from its weights file")
        from conch.open_clip_custom import create_model_from_pretrained  # type: ignore[import-not-found]

        model, _ = create_model_from_pretrained(preset.architecture, checkpoint_path=str(weights))
        return cast(nn.Module, model)
    import timm
    from musk import modeling, utils  # type: ignore[import-not-found]  # noqa: F401  (registers the model)

    model = timm.create_model(preset.architecture)
    if weights is not None:
        utils.load_model_and_may_interpolate(str(weights), model, "model|module", "")
    return model


class PresetNet(nn.Module):
    """Normalised pixels -> the preset's vector: centre crop (if any), the network, the authors' pooling."""

    def __init__(self, preset: Preset, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pooling = preset.pooling
        self.family = preset.family
        self.crop = preset.crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height > self.crop or width > self.crop:
            top, left = (height - self.crop) // 2, (width - self.crop) // 2
            x = x[..., top : top + self.crop, left : left + self.crop]
        model: Any = self.model
        if self.family == "conch":
            return cast(torch.Tensor, model.encode_image(x, proj_contrast=True, normalize=False))
        if self.family == "musk":
            out = model(image=x, with_head=False, out_norm=False, ms_aug=False, return_global=True)
            return cast(torch.Tensor, out[0])
        if self.pooling == "avg":
            return _resnet_to_layer3(model, x).mean(dim=(2, 3))
        tokens = model.forward_features(x)
        if self.pooling == "cls":
            return cast(torch.Tensor, tokens[:, 0])
        patches = tokens[:, int(model.num_prefix_tokens) :]
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)


def _resnet_to_layer3(model: Any, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.act1(model.bn1(model.conv1(x))))
    return cast(torch.Tensor, model.layer3(model.layer2(model.layer1(x))))
