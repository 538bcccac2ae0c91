"""The backbone registry: register, look up and list backbones; plugins via entry points."""

from __future__ import annotations

import difflib
import os
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any, overload

from torch import nn

from embedstore.backbones.base import Backbone, FactoryBackbone
from embedstore.backbones.spec import BackboneSpec
from embedstore.core.errors import BackboneError

ENTRY_POINT_GROUP = "embedstore.backbones"

_registry: dict[str, Backbone] = {}
_lock = threading.RLock()
_builtins_loaded = False
_entry_points_loaded: set[str] = set()
_entry_points_scanned = False

Factory = Callable[[], nn.Module]


def _ensure_builtins() -> None:
    global _builtins_loaded
    with _lock:
        if not _builtins_loaded:
            from embedstore.backbones.builtin import builtin_backbones

            for backbone in builtin_backbones():
                _registry.setdefault(backbone.spec.key, backbone)
            _builtins_loaded = True


def _ensure_all() -> None:
    _ensure_builtins()
    if not _entry_points_scanned:
        load_entry_points()


def _add(backbone: Backbone, overwrite: bool) -> Backbone:
    if not isinstance(backbone, Backbone):
        raise BackboneError(
            f"cannot register {type(backbone).__name__}; give a Backbone, or a BackboneSpec and a factory"
        )
    _ensure_builtins()
    with _lock:
        key = backbone.spec.key
        if key in _registry and _registry[key] is not backbone and not overwrite:
            raise BackboneError(
                f"backbone {key!r} is already registered; choose another key or pass overwrite=True"
            )
        _registry[key] = backbone
    return backbone


@overload
def register_backbone(backbone: Backbone, *, overwrite: bool = ...) -> Backbone: ...
@overload
def register_backbone(backbone: BackboneSpec, factory: Factory, *, overwrite: bool = ...) -> Backbone: ...
@overload
def register_backbone(
    backbone: BackboneSpec, *, weights: str | os.PathLike[str], overwrite: bool = ...
) -> Backbone: ...
@overload
def register_backbone(backbone: BackboneSpec, *, overwrite: bool = ...) -> Callable[[Factory], Factory]: ...
def register_backbone(
    backbone: Backbone | BackboneSpec,
    factory: Factory | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Any:
    """Register a backbone under its spec's key.

    - `register_backbone(my_backbone)`: any Backbone subclass instance.
    - `register_backbone(spec, factory)`: `factory()` returns an nn.Module mapping normalised float input
      (spec.mean/std already applied) to (B, spec.dim) features.
    - `register_backbone(spec, weights=path)`: timm `spec.architecture` with a local weights file or
      directory, using the spec's preprocessing (input_size, mean, std, mpp).
    - `@register_backbone(spec)` decorating a factory function.
    """
    if isinstance(backbone, Backbone):
        return _add(backbone, overwrite)
    if not isinstance(backbone, BackboneSpec):
        raise BackboneError(f"cannot register {type(backbone).__name__}; give a Backbone or a BackboneSpec")
    spec = backbone
    if factory is not None:
        return _add(FactoryBackbone(spec, factory), overwrite)
    if weights is not None:
        from embedstore.backbones.timm_backbones import weights_backbone

        loaded = weights_backbone(spec.key, weights, base=spec, architecture=spec.architecture)
        if loaded.spec.dim != spec.dim:
            raise BackboneError(
                f"backbone {spec.key!r}: spec says dim {spec.dim} "
                f"but {spec.architecture} gives {loaded.spec.dim}; fix the spec"
            )
        loaded.spec = spec.replace(weights_source=spec.weights_source or loaded.spec.weights_source)
        return _add(loaded, overwrite)

    def decorate(function: Factory) -> Factory:
        _add(FactoryBackbone(spec, function), overwrite)
        return function

    return decorate


def unregister_backbone(key: str) -> None:
    """Remove a registered key (no error if absent)."""
    with _lock:
        _registry.pop(key, None)


def load_entry_points(reload: bool = False) -> list[str]:
    """Register backbones from installed plugins (entry point group "embedstore.backbones"); returns new keys.

    An entry point may name a Backbone, or a callable returning a Backbone, an iterable of them, or None
    (when it registers things itself). A broken plugin gives a warning, never breaks the registry.
    """
    global _entry_points_scanned
    from importlib.metadata import entry_points

    _ensure_builtins()
    added: list[str] = []
    with _lock:
        _entry_points_scanned = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            ident = f"{point.name}={point.value}"
            if ident in _entry_points_loaded and not reload:
                continue
            _entry_points_loaded.add(ident)
            before = set(_registry)
            try:
                for backbone in _plugin_backbones(point.load()):
                    _add(backbone, overwrite=reload)
            except Exception as error:  # a plugin's bug must not break every command
                warnings.warn(
                    f"embedstore backbone plugin {point.name!r} ({point.value}) failed: {error}", stacklevel=2
                )
                continue
            added += [key for key in _registry if key not in before]
    return added


def _plugin_backbones(obj: Any) -> Iterable[Backbone]:
    if isinstance(obj, Backbone):
        return [obj]
    if callable(obj):
        result = obj()
        if result is None:
            return []
        return [result] if isinstance(result, Backbone) else list(result)
    raise BackboneError(f"entry point gave a {type(obj).__name__}; expected a Backbone or a callable")


def list_backbones() -> list[BackboneSpec]:
    """Specs of every registered backbone, in registration order (built-ins first)."""
    return [backbone.spec for backbone in registered_backbones()]


def registered_backbones() -> list[Backbone]:
    """Every registered Backbone, in registration order (built-ins first)."""
    _ensure_all()
    with _lock:
        return list(_registry.values())


def get_backbone(key: str, weights: str | os.PathLike[str] | None = None) -> Backbone:
    """The backbone for `key`; with `weights` (a local file or timm-format directory), its architecture
    with those weights.

    Besides registered keys: `hf-hub:org/name` (local Hugging Face cache only), `<timm arch>.random`,
    timm `arch.tag` keys whose weights sit in the local Hugging Face cache, and layer keys `KEY@stageN`
    or `KEY@stageN+M+...` (inner stages of KEY's timm network, pooled). Nothing is ever downloaded.
    """
    from embedstore.backbones import timm_backbones

    if not isinstance(key, str) or not key.strip():
        raise BackboneError("backbone key is empty; run `embedstore backbones` to see the keys")
    key = key.strip()
    _ensure_all()
    with _lock:
        registered = _registry.get(key)
    if registered is None and "@" in key:
        from embedstore.backbones.layers import LayerBackbone, parse_layer_key

        base, stages = parse_layer_key(key)
        return LayerBackbone(get_backbone(base, weights), stages)
    if weights is not None:
        from embedstore.backbones.presets import PresetBackbone

        if isinstance(registered, PresetBackbone):
            return PresetBackbone(registered.preset, weights)
        if registered is not None and not _is_timm(registered.spec.architecture):
            raise BackboneError(f"backbone {key!r} takes no weights file; drop --weights")
        return timm_backbones.weights_backbone(key, weights, base=registered.spec if registered else None)
    if registered is not None:
        return registered
    if key.startswith("hf-hub:"):
        return timm_backbones.hf_hub_backbone(key)
    architecture, _, tag = key.partition(".")
    if tag == timm_backbones.RANDOM_TAG and _is_timm(architecture):
        return timm_backbones.random_backbone(architecture)
    found = timm_backbones.pretrained_tag_backbone(key)
    if found is not None:
        return found
    raise BackboneError(_unknown_message(key, architecture))


def backbone_layers(key: str) -> list[tuple[str, int]]:
    """(name, pooled width) of each stage of `key`'s timm architecture, usable as `key@name`."""
    from embedstore.backbones.layers import available_layers, parse_layer_key

    base = parse_layer_key(key)[0] if isinstance(key, str) and "@" in key else key
    return available_layers(get_backbone(base))


def _is_timm(architecture: str) -> bool:
    from embedstore.backbones.timm_backbones import is_timm_architecture

    return is_timm_architecture(architecture)


def _unknown_message(key: str, architecture: str) -> str:
    with _lock:
        keys = list(_registry)
    close = difflib.get_close_matches(key, keys, n=5, cutoff=0.5)
    message = f"unknown backbone {key!r}"
    message += (
        f"; close matches: {', '.join(close)}" if close else "; run `embedstore backbones` to list the keys"
    )
    if _is_timm(architecture):
        message += f"; to use your own {architecture} weights pass --weights FILE"
    return message
