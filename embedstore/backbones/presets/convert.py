"""Renaming transformers-format ViT checkpoints (ViTModel, Dinov2Model) to timm's VisionTransformer names.

Pure tensor bookkeeping: query/key/value are stacked into timm's fused qkv, layer scales become
`ls1.gamma`/`ls2.gamma`, Dinov2's unused mask token and a ViTModel pooler are dropped.
"""

from __future__ import annotations

import re

import torch

from embedstore.core.errors import BackboneError

_DROPPED = ("embeddings.mask_token", "pooler.")
_STRIPPED_PREFIXES = ("vit.", "dinov2.", "model.")
_FIXED = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_BLOCK_PARTS = {
    # ViTModel
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    # Dinov2Model
    "norm1": "norm1",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    # both
    "attention.output.dense": "attn.proj",
}
_SCALES = {"layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}


def hf_vit_to_timm(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """A transformers ViTModel / Dinov2Model state dict in timm VisionTransformer naming."""
    state = _strip_prefix(state)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    for name, tensor in state.items():
        if name.startswith(_DROPPED):
            continue
        if name in _FIXED:
            out[_FIXED[name]] = tensor
            continue
        match = _LAYER.fullmatch(name)
        if match is None:
            raise BackboneError(
                f"weights {source!r} hold {name!r}, which is not a transformers ViT/Dinov2 tensor; "
                "is this the preset's checkpoint?"
            )
        index, rest = int(match.group(1)), match.group(2)
        part, _, param = rest.rpartition(".")
        if rest in _SCALES:
            out[f"blocks.{index}.{_SCALES[rest]}"] = tensor
        elif part.startswith("attention.attention."):
            qkv.setdefault(index, {}).setdefault(param, {})[part.rsplit(".", 1)[1]] = tensor
        elif part in _BLOCK_PARTS:
            out[f"blocks.{index}.{_BLOCK_PARTS[part]}.{param}"] = tensor
        else:
            raise BackboneError(
                f"weights {source!r} hold {name!r}, which is not a transformers ViT/Dinov2 tensor; "
                "is this the preset's checkpoint?"
            )
    for index, params in qkv.items():
        for param, parts in params.items():
            missing = [p for p in ("query", "key", "value") if p not in parts]
            if missing:
                name = f"encoder.layer.{index}.attention.attention.{missing[0]}.{param}"
                raise BackboneError(f"weights {source!r} lack {name!r}; is the file complete?")
            out[f"blocks.{index}.attn.qkv.{param}"] = torch.cat(
                [parts["query"], parts["key"], parts["value"]]
            )
    return out


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _STRIPPED_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state
