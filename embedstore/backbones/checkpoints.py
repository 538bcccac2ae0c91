"""Reading weights from local files and directories, and checking they fit a model before loading."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from embedstore.core.errors import BackboneError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Files a timm / Hugging Face model directory may hold its weights in, most preferred first.
DIR_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "pytorch_model.pth")
_NESTED_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")

Shapes = dict[str, tuple[int, ...]]


def check_weights_file(path: Path) -> None:
    """Refuse a path that is not a weights file we can read."""
    if not path.is_file():
        raise BackboneError(
            f"weights path {str(path)!r} is not a file; give a weights file or a model directory"
        )
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise BackboneError(
            f"weights file {str(path)!r} has an unknown suffix; use one of {', '.join(WEIGHT_SUFFIXES)}"
        )


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: descend into 'state_dict'/'model'/..., drop 'module.' prefixes."""
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        nested = next((obj[k] for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        obj = nested
    tensors = (
        {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    )
    if not tensors:
        raise BackboneError(
            f"weights file {str(path)!r} holds no state_dict; "
            "save one with torch.save(model.state_dict(), path)"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _torch_load(path: Path, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as error:
        if mmap and "mmap" in str(error):  # legacy (non-zip) files cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
        raise


def read_state_dict(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in a .safetensors / .pth / .pt / .bin file (on CPU, never executing pickled code)."""
    check_weights_file(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return _unwrap(load_file(str(path), device="cpu"), path)
        return _unwrap(_torch_load(path, mmap=mmap), path)
    except BackboneError:
        raise
    except Exception as error:
        text = str(error)
        if "Unsupported global" in text:
            raise BackboneError(
                f"weights file {str(path)!r} holds Python objects besides tensors, so it is not loaded; "
                "re-save just the weights: torch.save(checkpoint['state_dict'], 'weights.pth')"
            ) from None
        reason = "not a PyTorch checkpoint" if "Weights only load failed" in text else text.split("\n")[0]
        raise BackboneError(
            f"cannot read weights file {str(path)!r} ({reason or type(error).__name__}); "
            "is the file complete?"
        ) from None


def read_shapes(path: Path) -> Shapes:
    """Tensor shapes in a weights file, without reading the tensors where the format allows."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        check_weights_file(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        except Exception as error:
            raise BackboneError(
                f"cannot read weights file {str(path)!r} ({error}); is it a complete file?"
            ) from None
    return {k: tuple(v.shape) for k, v in read_state_dict(path, mmap=True).items()}


def check_fits(expected: Shapes, found: Shapes, source: str, architecture: str) -> None:
    """Raise a one-line BackboneError naming the first key that does not fit, if any."""
    for key, shape in expected.items():
        if key in found and tuple(found[key]) != tuple(shape):
            raise BackboneError(
                f"weights {source!r} do not fit {architecture}: {key!r} has shape {tuple(found[key])} in the "
                f"file but {tuple(shape)} in the model; check the architecture named in the backbone key"
            )
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    if missing:
        raise BackboneError(
            f"weights {source!r} lack {len(missing)} tensors that {architecture} needs, "
            f"first {missing[0]!r}; "
            "is this a checkpoint of that architecture in timm's naming?"
        )
    unexpected = [k for k in found if k not in expected]
    if unexpected:
        raise BackboneError(
            f"weights {source!r} hold {len(unexpected)} tensors that {architecture} does not have, "
            f"first {unexpected[0]!r}; is this a checkpoint of that architecture in timm's naming?"
        )


def read_model_dir(directory: Path, preferred: str | None = None) -> tuple[dict[str, Any], Path]:
    """(config.json contents, weights file) of a timm / Hugging Face model directory."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise BackboneError(
            f"model directory {str(directory)!r} has no config.json; give the weights file itself instead"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise BackboneError(f"cannot read {str(config_path)!r} ({error}); is it valid JSON?") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise BackboneError(
            f"{str(config_path)!r} names no timm 'architecture'; "
            "only timm-format model directories are supported"
        )
    names = ((preferred,) if preferred else ()) + DIR_WEIGHT_FILES
    weights = next((directory / n for n in names if (directory / n).is_file()), None)
    if weights is None:
        raise BackboneError(
            f"model directory {str(directory)!r} holds none of {', '.join(DIR_WEIGHT_FILES)}; "
            "is the download complete?"
        )
    return config, weights
