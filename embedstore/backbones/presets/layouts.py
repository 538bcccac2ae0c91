"""The tensor names and shapes of a preset's published checkpoint, generated from its layout record.

Three namings: timm's (the hub checkpoints of UNI, Virchow, H-optimus, GigaPath, kaiko, Lunit, GPFM),
transformers' ViTModel (Phikon) and Dinov2Model (Phikon-v2), and torchvision's ResNet (resnet50-trunc).
`depth` replaces the layout's depth (tests build shallow copies of the big models).
"""

from __future__ import annotations

from dataclasses import replace

from embedstore.backbones.presets.records import Preset, ResNetLayout, ViTLayout
from embedstore.core.errors import BackboneError

Shapes = dict[str, tuple[int, ...]]


def checkpoint_shapes(preset: Preset, depth: int | None = None) -> Shapes:
    """Name -> shape of every tensor in the preset's checkpoint (in its own naming)."""
    layout = preset.layout
    if isinstance(layout, ResNetLayout):
        return _resnet(layout)
    if not isinstance(layout, ViTLayout):
        raise BackboneError(f"preset {preset.name!r} has no checkpoint layout; its package defines it")
    if depth is not None:
        layout = replace(layout, depth=depth)
    naming = {"timm": _timm_vit, "hf-vit": _hf_vit, "hf-dinov2": _hf_dinov2}
    return naming[preset.checkpoint_format](layout)


def _linear(name: str, out: int, inp: int) -> Shapes:
    return {f"{name}.weight": (out, inp), f"{name}.bias": (out,)}


def _norm(name: str, dim: int) -> Shapes:
    return {f"{name}.weight": (dim,), f"{name}.bias": (dim,)}


def _timm_vit(v: ViTLayout) -> Shapes:
    d = v.embed_dim
    shapes: Shapes = {"cls_token": (1, 1, d)}
    if v.reg_tokens:
        shapes["reg_token"] = (1, v.reg_tokens, d)
    shapes["pos_embed"] = (1, v.pos_tokens, d)
    shapes.update({"patch_embed.proj.weight": (d, 3, v.patch, v.patch), "patch_embed.proj.bias": (d,)})
    for i in range(v.depth):
        b = f"blocks.{i}"
        shapes.update(_norm(f"{b}.norm1", d))
        shapes.update(_linear(f"{b}.attn.qkv", 3 * d, d))
        shapes.update(_linear(f"{b}.attn.proj", d, d))
        if v.layerscale:
            shapes[f"{b}.ls1.gamma"] = (d,)
        shapes.update(_norm(f"{b}.norm2", d))
        shapes.update(_linear(f"{b}.mlp.fc1", v.mlp_hidden, d))
        shapes.update(_linear(f"{b}.mlp.fc2", d, v.mlp_out_in))
        if v.layerscale:
            shapes[f"{b}.ls2.gamma"] = (d,)
    shapes.update(_norm("norm", d))
    return shapes


def _hf_embeddings(v: ViTLayout) -> Shapes:
    d = v.embed_dim
    shapes: Shapes = {"embeddings.cls_token": (1, 1, d)}
    if v.mask_token:
        shapes["embeddings.mask_token"] = (1, d)
    shapes["embeddings.position_embeddings"] = (1, v.pos_tokens, d)
    shapes["embeddings.patch_embeddings.projection.weight"] = (d, 3, v.patch, v.patch)
    shapes["embeddings.patch_embeddings.projection.bias"] = (d,)
    return shapes


def _hf_attention(prefix: str, d: int) -> Shapes:
    shapes: Shapes = {}
    for part in ("query", "key", "value"):
        shapes.update(_linear(f"{prefix}.attention.attention.{part}", d, d))
    shapes.update(_linear(f"{prefix}.attention.output.dense", d, d))
    return shapes


def _hf_vit(v: ViTLayout) -> Shapes:
    d = v.embed_dim
    shapes = _hf_embeddings(v)
    for i in range(v.depth):
        b = f"encoder.layer.{i}"
        shapes.update(_hf_attention(b, d))
        shapes.update(_linear(f"{b}.intermediate.dense", v.mlp_hidden, d))
        shapes.update(_linear(f"{b}.output.dense", d, v.mlp_out_in))
        shapes.update(_norm(f"{b}.layernorm_before", d))
        shapes.update(_norm(f"{b}.layernorm_after", d))
    shapes.update(_norm("layernorm", d))
    return shapes


def _hf_dinov2(v: ViTLayout) -> Shapes:
    d = v.embed_dim
    shapes = _hf_embeddings(v)
    for i in range(v.depth):
        b = f"encoder.layer.{i}"
        shapes.update(_norm(f"{b}.norm1", d))
        shapes.update(_hf_attention(b, d))
        shapes[f"{b}.layer_scale1.lambda1"] = (d,)
        shapes.update(_norm(f"{b}.norm2", d))
        shapes.update(_linear(f"{b}.mlp.fc1", v.mlp_hidden, d))
        shapes.update(_linear(f"{b}.mlp.fc2", d, v.mlp_out_in))
        shapes[f"{b}.layer_scale2.lambda1"] = (d,)
    shapes.update(_norm("layernorm", d))
    return shapes


def _bn(name: str, c: int) -> Shapes:
    return {f"{name}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")}


def _resnet(r: ResNetLayout) -> Shapes:
    """torchvision / timm bottleneck ResNet names (BatchNorm's num_batches_tracked left out: optional)."""
    shapes: Shapes = {"conv1.weight": (r.width, 3, 7, 7), **_bn("bn1", r.width)}
    inp = r.width
    for stage, count in enumerate(r.blocks):
        mid = r.width * 2**stage
        out = mid * 4
        for j in range(count):
            b = f"layer{stage + 1}.{j}"
            shapes[f"{b}.conv1.weight"] = (mid, inp, 1, 1)
            shapes.update(_bn(f"{b}.bn1", mid))
            shapes[f"{b}.conv2.weight"] = (mid, mid, 3, 3)
            shapes.update(_bn(f"{b}.bn2", mid))
            shapes[f"{b}.conv3.weight"] = (out, mid, 1, 1)
            shapes.update(_bn(f"{b}.bn3", out))
            if j == 0:
                shapes[f"{b}.downsample.0.weight"] = (out, inp, 1, 1)
                shapes.update(_bn(f"{b}.downsample.1", out))
            inp = out
    shapes.update(_linear("fc", r.classes, inp))
    return shapes
