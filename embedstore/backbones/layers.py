"""Layer keys: a backbone's intermediate stages as a backbone of their own, `KEY@stage5`, `KEY@stage4+5+6`.

Each chosen stage's output is global-average-pooled (feature maps: mean over H, W; tokens: mean over the
patch tokens) and the results are concatenated in stage order, all from one forward pass that stops right
after the deepest chosen stage. Stages are numbered from 0: the children of `model.blocks`
(EfficientNet, ViT), else of `model.stages` (ConvNeXt and friends), else ResNet's `layer1..layer4`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import nn

from embedstore.backbones.base import Backbone, FactoryBackbone
from embedstore.core.errors import BackboneError

if TYPE_CHECKING:
    from embedstore.backbones.presets import PresetBackbone

EXAMPLE = "tf_efficientnet_lite2.in1k@stage4+5+6"
_FIRST = re.compile(r"stage(\d+)")
_MORE = re.compile(r"(?:stage)?(\d+)")


def parse_layer_key(key: str) -> tuple[str, tuple[int, ...]]:
    """`base@stage4+5+6` (or `base@stage4+stage6`) -> (base key, sorted unique stage numbers)."""
    base, _, layer = key.strip().partition("@")
    parts = layer.split("+")
    first = _FIRST.fullmatch(parts[0])
    more = [_MORE.fullmatch(part) for part in parts[1:]]
    if not base or "@" in layer or first is None or not all(more):
        raise BackboneError(
            f"malformed layer key {key!r}; write BASE@stageN or BASE@stageN+M+..., e.g. {EXAMPLE!r}"
        )
    numbers = [int(first.group(1))] + [int(match.group(1)) for match in more if match]
    return base, tuple(sorted(set(numbers)))


def layer_name(stages: Iterable[int]) -> str:
    """(4, 5, 6) -> "stage4+5+6"; (2,) -> "stage2" (the canonical spelling)."""
    return "stage" + "+".join(str(stage) for stage in sorted(set(stages)))


def stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """("stage0", module), ... of a timm model; BackboneError if it has no stages this module knows."""
    blocks, stages = getattr(model, "blocks", None), getattr(model, "stages", None)
    if isinstance(blocks, nn.Module):
        found = list(blocks.children())
    elif isinstance(stages, nn.Module):
        found = list(stages.children())
    elif all(isinstance(getattr(model, f"layer{i}", None), nn.Module) for i in range(1, 5)):
        found = [getattr(model, f"layer{i}") for i in range(1, 5)]
    else:
        found = []
    if not found:
        raise BackboneError(
            f"{type(model).__name__} has no blocks, stages or layer1..layer4 to take layers from; "
            "use the backbone's key without @"
        )
    return [(f"stage{i}", module) for i, module in enumerate(found)]


def _pooled(output: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
    """(B, C, H, W) -> mean over H, W; (B, N, C) tokens -> mean over the patch tokens; in float32."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.ndim == 4:
        return output.mean(dim=(2, 3), dtype=torch.float32)
    if output.ndim == 3:
        return output[:, prefix_tokens:].mean(dim=1, dtype=torch.float32)
    raise BackboneError(f"a stage gave a {output.ndim}-d output; layers need 4-d maps or 3-d tokens")


@lru_cache(maxsize=64)
def _stage_widths(architecture: str, input_size: int) -> tuple[tuple[str, int], ...]:
    """(name, pooled width) of every stage, from one forward of a meta-device model (no memory, no compute);
    of a randomly initialised CPU model where an op has no meta kernel."""
    try:
        return _widths_on(_headless(architecture, torch.device("meta")), input_size, torch.device("meta"))
    except BackboneError:
        raise
    except Exception:  # an op without a meta kernel: one real forward of a randomly initialised model
        with torch.no_grad():
            return _widths_on(_headless(architecture, torch.device("cpu")), input_size, torch.device("cpu"))


def _headless(architecture: str, device: torch.device) -> nn.Module:
    import timm

    with device:
        return timm.create_model(architecture, pretrained=False, num_classes=0).eval()


def _widths_on(model: nn.Module, input_size: int, device: torch.device) -> tuple[tuple[str, int], ...]:
    stages = stage_modules(model)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    widths: dict[str, int] = {}

    def hook(name: str):
        return lambda module, inputs, output: widths.__setitem__(name, _pooled(output, prefix).shape[-1])

    handles = [module.register_forward_hook(hook(name)) for name, module in stages]
    try:
        model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return tuple((name, int(widths[name])) for name, _ in stages)


def _timm_architecture(backbone: Backbone) -> str:
    from embedstore.backbones.timm_backbones import is_timm_architecture

    architecture = backbone.spec.architecture
    if isinstance(backbone, FactoryBackbone) or not is_timm_architecture(architecture):
        raise BackboneError(
            f"backbone {backbone.spec.key!r} is not a timm model; layer keys (KEY@stageN) need a timm "
            "architecture"
        )
    return architecture


def available_layers(backbone: Backbone) -> list[tuple[str, int]]:
    """(name, pooled width) of each stage of the backbone's architecture, e.g. [("stage0", 16), ...]."""
    from embedstore.backbones.presets import PresetBackbone

    if isinstance(backbone, LayerBackbone):
        backbone = backbone.base
    if isinstance(backbone, PresetBackbone):
        return list(_preset_widths(backbone))
    return list(_stage_widths(_timm_architecture(backbone), backbone.spec.input_size))


_PRESET_WIDTHS: dict[str, tuple[tuple[str, int], ...]] = {}


def _preset_widths(backbone: PresetBackbone) -> tuple[tuple[str, int], ...]:
    """A preset's stage widths, from a meta-device copy of its network (CPU if an op lacks a meta kernel)."""
    name = backbone.preset.name
    if name not in _PRESET_WIDTHS:
        size = backbone.preset.crop
        try:
            meta = torch.device("meta")
            widths = _widths_on(backbone.trunk(meta, with_weights=False), size, meta)
        except BackboneError:
            raise
        except Exception:  # an op without a meta kernel
            cpu = torch.device("cpu")
            with torch.no_grad():
                widths = _widths_on(backbone.trunk(cpu, with_weights=False), size, cpu)
        _PRESET_WIDTHS[name] = widths
    return _PRESET_WIDTHS[name]


class _Stop(Exception):
    """Raised by the deepest chosen stage's hook: the layers after it are never computed."""


class _Capture:
    """The forward hook of one chosen stage: store its pooled output; stop the forward after the deepest.

    An object holding the shared dict (not a closure over the module), so a deep copy of the module
    gets hooks that fill the copy's dict.
    """

    def __init__(self, captured: dict[int, torch.Tensor], stage: int, prefix_tokens: int, last: bool) -> None:
        self.captured, self.stage, self.prefix_tokens, self.last = captured, stage, prefix_tokens, last

    def __call__(self, module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        self.captured[self.stage] = _pooled(output, self.prefix_tokens)
        if self.last:
            raise _Stop


class StageFeatures(nn.Module):
    """A timm model run up to its deepest chosen stage: the chosen stages pooled and concatenated.

    Forward hooks capture each chosen stage's output (pooled at once, so no feature map is kept); the
    deepest one raises `_Stop`, which `forward` catches, so the rest of the network is skipped.
    """

    def __init__(self, model: nn.Module, stages: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.stages = stages
        self._captured: dict[int, torch.Tensor] = {}
        prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        modules = stage_modules(model)
        for stage in stages:
            hook = _Capture(self._captured, stage, prefix_tokens, last=stage == stages[-1])
            modules[stage][1].register_forward_hook(hook)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._captured.clear()
        # a plain try/except (not contextlib.suppress): torch.compile traces it into one graph that ends at
        # the deepest chosen stage, so compiled layer nets skip the later layers too
        try:  # noqa: SIM105
            self.model(x)
        except _Stop:
            pass
        if len(self._captured) != len(self.stages):
            raise RuntimeError(f"stages {sorted(set(self.stages) - set(self._captured))} never ran")
        features = torch.cat([self._captured[stage] for stage in self.stages], dim=1)
        self._captured.clear()  # hold no tensors between calls
        return features


class LayerBackbone(Backbone):
    """`base@stageN[+M...]`: the base backbone's weights and preprocessing, features from inner stages."""

    def __init__(self, base: Backbone, stages: Iterable[int]) -> None:
        if isinstance(base, LayerBackbone):
            raise BackboneError(f"{base.spec.key!r} is already a layer key; name all its stages after one @")
        stages = tuple(sorted(set(int(stage) for stage in stages)))
        layers = available_layers(base)
        unknown = [stage for stage in stages if not 0 <= stage < len(layers)]
        if not stages or unknown:
            listed = ", ".join(f"{name} ({width})" for name, width in layers)
            which = f"stage{unknown[0]}" if unknown else "()"
            raise BackboneError(f"{base.spec.key!r} has no layer {which}; its layers (width): {listed}")
        self.base = base
        self.stages = stages
        self.layer = layer_name(stages)
        names = ", ".join(layers[stage][0] for stage in stages)
        super().__init__(
            base.spec.replace(
                key=f"{base.spec.key}@{self.layer}",
                dim=sum(layers[stage][1] for stage in stages),
                pooling="",
                description=f"{base.spec.key} layers {names}, each global-average-pooled, concatenated",
            )
        )

    def available(self) -> tuple[bool, str]:
        return self.base.available()

    def weights_sha256(self) -> str:
        return self.base.weights_sha256()

    def _compute_sha256(self) -> str:
        return self.base.weights_sha256()

    def _create(self, with_classifier: bool) -> nn.Module:
        from embedstore.backbones.presets import PresetBackbone

        if with_classifier:
            raise self._no_classifier()
        if isinstance(self.base, PresetBackbone):
            stages = StageFeatures(self.base.trunk(), self.stages)
            return nn.Sequential(self.base.crop_module(), stages)
        return StageFeatures(self.base._create(False), self.stages)
