"""timm architectures: seeded random baselines, and weights from a local file, directory or HF cache."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn

from embedstore.backbones.base import Backbone, existing_path, file_sha256, state_dict_sha256
from embedstore.backbones.checkpoints import Shapes, check_fits, read_model_dir, read_shapes, read_state_dict
from embedstore.backbones.hf_cache import cached_snapshot, hub_cache_dir
from embedstore.backbones.spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from embedstore.core.errors import BackboneError

RANDOM_TAG = "random"
RANDOM_SEED = 0


class _TimmModel(Protocol):
    """What embedstore uses of a timm model beyond `nn.Module` (timm types `create_model` as a Module)."""

    pretrained_cfg: dict[str, Any]
    num_features: int

    def reset_classifier(self, num_classes: int) -> None: ...


def is_timm_architecture(architecture: str) -> bool:
    """Whether timm knows this architecture name."""
    import timm

    return bool(architecture) and timm.is_model(architecture)


def require_timm_architecture(architecture: str) -> None:
    """Raise a BackboneError (with close matches) unless timm knows the architecture."""
    import timm

    if not timm.is_model(architecture):
        import difflib

        close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() for the names"
        raise BackboneError(f"timm has no architecture {architecture!r}{hint}")


def pretrained_cfg(architecture: str, tag: str | None = None) -> dict[str, Any] | None:
    """timm's pretrained config for arch.tag (or the arch's default tag), or None if there is none."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(f"{architecture}.{tag}" if tag else architecture)
    except RuntimeError:  # an unknown tag
        return None
    return cfg.to_dict() if cfg is not None else None


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = cast(_TimmModel, model).pretrained_cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{name}." for name in names)


@lru_cache(maxsize=64)
def _meta_shapes_and_dim(architecture: str, input_size: int) -> tuple[Shapes, int]:
    """Parameter shapes of the headless model, and its feature dim, from a meta-device model (no memory)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, num_classes=0)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        dim = int(model(torch.empty(1, 3, input_size, input_size, device="meta")).shape[-1])
    except Exception:  # an op without a meta kernel: fall back to what timm reports
        dim = int(getattr(model, "head_hidden_size", None) or cast(_TimmModel, model).num_features)
    return shapes, dim


def feature_dim(architecture: str, input_size: int) -> int:
    """Length of the pooled, pre-classifier features of a timm architecture."""
    return _meta_shapes_and_dim(architecture, input_size)[1]


def timm_from_state_dict(
    architecture: str, state: dict[str, torch.Tensor], with_classifier: bool, source: str
) -> nn.Module:
    """A timm model with `state` loaded strictly: headless, or with the checkpoint's own classifier."""
    import timm

    model = timm.create_model(architecture, pretrained=False)
    prefixes = _classifier_prefixes(model)
    if with_classifier:
        heads = [k for k in state if prefixes and k.startswith(prefixes) and k.endswith(".weight")]
        if not heads:
            raise BackboneError(
                f"weights {source!r} hold no classifier; call build() without with_classifier"
            )
        model = timm.create_model(architecture, pretrained=False, num_classes=int(state[heads[0]].shape[0]))
    else:
        state = {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}
        cast(_TimmModel, model).reset_classifier(0)
    check_fits(
        {k: tuple(v.shape) for k, v in model.state_dict().items()}, _shapes(state), source, architecture
    )
    model.load_state_dict(state, strict=True)
    return model.float().eval()


def _shapes(state: dict[str, torch.Tensor]) -> Shapes:
    return {k: tuple(v.shape) for k, v in state.items()}


class TimmRandomBackbone(Backbone):
    """A timm architecture with seeded random weights: an honest 'no pretraining' baseline."""

    def __init__(self, spec: BackboneSpec, seed: int = RANDOM_SEED) -> None:
        super().__init__(spec)
        self.seed = seed

    def _create(self, with_classifier: bool) -> nn.Module:
        import timm

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = timm.create_model(self.spec.architecture, pretrained=False)
        if not with_classifier:
            cast(_TimmModel, model).reset_classifier(0)
        return model.float().eval()

    def _compute_sha256(self) -> str:
        return state_dict_sha256(self._create(False).state_dict())


class TimmWeightsBackbone(Backbone):
    """A timm architecture with weights from one local file (.safetensors / .pth / .pt / .bin)."""

    def __init__(self, spec: BackboneSpec, weights_file: Path) -> None:
        super().__init__(spec)
        self.weights_file = weights_file

    def available(self) -> tuple[bool, str]:
        if not self.weights_file.is_file():
            return False, f"weights file {str(self.weights_file)!r} is missing"
        return True, ""

    def _create(self, with_classifier: bool) -> nn.Module:
        state = read_state_dict(self.weights_file)
        return timm_from_state_dict(self.spec.architecture, state, with_classifier, str(self.weights_file))

    def _compute_sha256(self) -> str:
        return file_sha256(self.weights_file)


def random_spec(architecture: str, dim: int, input_size: int) -> BackboneSpec:
    """The spec of `<architecture>.random`: seeded random init, ImageNet mean/std."""
    from importlib.metadata import version

    return BackboneSpec(
        key=f"{architecture}.{RANDOM_TAG}",
        architecture=architecture,
        dim=dim,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights_source=f"random init (torch.manual_seed({RANDOM_SEED}), timm {version('timm')})",
        licence="n/a (no trained weights)",
        description=f"{architecture} with seeded random weights: a no-pretraining baseline",
    )


def random_backbone(architecture: str) -> TimmRandomBackbone:
    """`<architecture>.random` for any timm architecture, at timm's default input size."""
    require_timm_architecture(architecture)
    size = int((pretrained_cfg(architecture) or {}).get("input_size", (3, 224, 224))[-1])
    return TimmRandomBackbone(random_spec(architecture, feature_dim(architecture, size), size))


def _preprocessing(config: dict[str, Any] | None, base: BackboneSpec | None) -> dict[str, Any]:
    """input_size / mean / std / licence from a timm config, else the spec `base`, else ImageNet's."""
    if config:
        return {
            "input_size": int(config.get("input_size", (3, 224, 224))[-1]),
            "mean": tuple(config.get("mean", IMAGENET_MEAN)),
            "std": tuple(config.get("std", IMAGENET_STD)),
            "licence": str(config.get("license") or "unknown"),
        }
    if base is not None:
        return {"input_size": base.input_size, "mean": base.mean, "std": base.std, "licence": "unknown"}
    return {"input_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "licence": "unknown"}


def _file_backbone(
    key: str,
    architecture: str,
    weights_file: Path,
    preprocessing: dict[str, Any],
    mpp: float | None,
    source: str | None = None,
) -> TimmWeightsBackbone:
    """Check the file fits the architecture (shapes only, cheaply) and describe it."""
    require_timm_architecture(architecture)
    shapes, dim = _meta_shapes_and_dim(architecture, preprocessing["input_size"])
    headless = _classifier_free(read_shapes(weights_file), architecture)
    check_fits(shapes, headless, str(weights_file), architecture)
    spec = BackboneSpec(
        key=key,
        architecture=architecture,
        dim=dim,
        mpp=mpp,
        weights_source=source or f"local file {weights_file}",
        description=f"timm {architecture} with weights from a local file",
        **preprocessing,
    )
    return TimmWeightsBackbone(spec, weights_file)


def _classifier_free(shapes: Shapes, architecture: str) -> Shapes:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(architecture)
    names = (cfg.classifier if cfg else None) or ()
    prefixes = tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))
    return {k: v for k, v in shapes.items() if not (prefixes and k.startswith(prefixes))}


def _dir_backbone(
    key: str, architecture: str | None, directory: Path, base: BackboneSpec | None, source: str | None = None
) -> TimmWeightsBackbone:
    """A timm-format model directory (config.json + weights), as saved by timm or found in the HF cache."""
    config, weights_file = read_model_dir(directory)
    config_arch = config["architecture"]
    if architecture is not None and architecture != config_arch:
        raise BackboneError(
            f"{str(directory)!r} holds a {config_arch}, not a {architecture}; "
            f"use a key starting '{config_arch}.'"
        )
    cfg = config.get("pretrained_cfg") or pretrained_cfg(config_arch)
    mpp = base.mpp if base else None
    return _file_backbone(key, config_arch, weights_file, _preprocessing(cfg, base), mpp, source)


def weights_backbone(
    key: str,
    weights: str | os.PathLike[str],
    base: BackboneSpec | None = None,
    architecture: str | None = None,
) -> Backbone:
    """`key` with weights from a local file or timm-format directory; the architecture defaults to the
    part of the key before the first dot.

    Preprocessing comes from the directory's config, else the spec `base`, else timm's config for the key's
    tag (or the architecture's default).
    """
    if key.startswith("hf-hub:"):
        raise BackboneError(
            f"{key!r} takes its weights from the HF cache; drop --weights or use a key like 'arch.mine'"
        )
    if "." not in key:
        raise BackboneError(f"backbone key {key!r} has no tag; use 'architecture.tag', e.g. '{key}.mylab'")
    key_arch, tag = key.split(".", 1)
    architecture = architecture or key_arch
    path = existing_path(weights, "weights path")
    require_timm_architecture(architecture)
    if path.is_dir():
        return _dir_backbone(key, architecture, path, base)
    config = None if base is not None else (pretrained_cfg(architecture, tag) or pretrained_cfg(architecture))
    return _file_backbone(key, architecture, path, _preprocessing(config, base), base.mpp if base else None)


def hf_hub_backbone(key: str) -> Backbone:
    """`hf-hub:org/name`: a timm model from the local Hugging Face cache only."""
    repo_id = key[len("hf-hub:") :]
    snapshot = cached_snapshot(repo_id)
    if snapshot is None:
        raise BackboneError(
            f"{repo_id!r} is not in the local Hugging Face cache ({hub_cache_dir()}) and embedstore never "
            "downloads; pass the model's local directory with --weights DIR and a key like 'arch.tag' instead"
        )
    return _dir_backbone(key, None, snapshot, None, source=f"local Hugging Face cache {snapshot}")


def pretrained_tag_backbone(key: str) -> Backbone | None:
    """A timm `arch.tag` with real pretrained weights: from the HF cache if there, else a BackboneError.

    Returns None when the key is not a timm pretrained tag at all.
    """
    import timm

    if "." not in key:
        return None
    architecture, tag = key.split(".", 1)
    if not timm.is_model(architecture):
        return None
    cfg = pretrained_cfg(architecture, tag)
    if cfg is None or cfg.get("tag") != tag:
        return None
    hub_id = cfg.get("hf_hub_id")
    snapshot = cached_snapshot(hub_id) if hub_id else None
    if snapshot is None:
        raise BackboneError(
            f"the pretrained weights for {key!r} are not on this machine and embedstore never downloads; "
            f"pass --weights FILE (a local .safetensors/.pth of {architecture}) "
            f"or use '{architecture}.random'"
        )
    _, weights_file = read_model_dir(snapshot, cfg.get("hf_hub_filename"))
    source = f"timm {key} from the local Hugging Face cache {snapshot}"
    return _file_backbone(key, architecture, weights_file, _preprocessing(cfg, None), None, source)
