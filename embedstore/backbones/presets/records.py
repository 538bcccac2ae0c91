"""The record of one pathology preset: architecture, preprocessing, pooling, weights and licence, as data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The families a preset's builder and checkpoint layout can be (see builders.py and layouts.py).
FAMILIES = ("timm-vit", "hf-vit", "hf-dinov2", "timm-resnet-trunc", "conch", "musk")
POOLINGS = ("cls", "cls+mean", "avg", "projection")


@dataclass(frozen=True)
class ViTLayout:
    """The shape of a ViT checkpoint, from which its tensor names and shapes are generated (layouts.py).

    mlp_hidden: fc1's output width (for SwiGLU "packed" layers: both halves together); mlp_out_in: fc2's
    input width (half of mlp_hidden for SwiGLU). pos_tokens: rows of the position embedding.
    """

    embed_dim: int
    depth: int
    patch: int
    mlp_hidden: int
    mlp_out_in: int
    pos_tokens: int
    reg_tokens: int = 0
    layerscale: bool = True
    mask_token: bool = False  # HF Dinov2 checkpoints carry an unused mask token


@dataclass(frozen=True)
class ResNetLayout:
    """The shape of a torchvision-named bottleneck ResNet checkpoint: blocks per stage, classifier classes."""

    blocks: tuple[int, ...]
    classes: int
    width: int = 64


@dataclass(frozen=True)
class Preset:
    """One pathology tile encoder, exactly as its authors run it.

    name / version: the backbone key and the preset's revision (bumped when anything here changes).
    architecture + kwargs: the timm model and its constructor arguments; kwargs are JSON data, with
      "mlp_layer"/"act_layer" named ("SwiGLUPacked", "SiLU") and "norm_eps" for the LayerNorm epsilon.
    input_size: the side the pipeline resizes each tile to; crop: the centre crop the network then takes
      (= input_size when the authors only resize). interpolation: the authors' resize filter.
    pooling: "cls" (class token), "cls+mean" (class token, then the mean of the patch tokens, registers
      excluded), "avg" (global average of a feature map), "projection" (the model's own projection head).
    checkpoint_format: the naming of the published weights ("timm", "hf-vit", "hf-dinov2", "package").
    layout: the published checkpoint's structure (None where a package owns the architecture).
    sources: where the facts come from (model cards, reference loaders).
    """

    name: str
    version: int
    title: str
    family: str
    architecture: str
    kwargs: dict[str, Any]
    dim: int
    input_size: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pooling: str
    precision: str
    licence: str
    gated: bool
    repo: str
    weight_files: tuple[str, ...]
    checkpoint_format: str
    layout: ViTLayout | ResNetLayout | None = None
    repo_type: str = "model"
    extra: str = ""  # the optional dependency group the preset needs ("" = none)
    mpp: float | None = None  # the um/px the authors state (slide2vec's supported spacing), else None
    sources: tuple[str, ...] = ()
    note: str = ""
    verified: bool = True  # False: an architecture detail could not be confirmed from a public source

    @property
    def url(self) -> str:
        """The weights' Hugging Face page."""
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"https://huggingface.co/{prefix}{self.repo}"

    @property
    def download_command(self) -> str:
        """The command that fetches the weights on a connected machine."""
        kind = " --repo-type dataset" if self.repo_type == "dataset" else ""
        return f"huggingface-cli download {self.repo} {self.weight_files[0]}{kind}"

    @property
    def env_var(self) -> str:
        """The environment variable that may name this preset's weights file or folder."""
        return "EMBEDSTORE_WEIGHTS_" + "".join(c if c.isalnum() else "_" for c in self.name.upper())

    def preprocessing(self) -> dict[str, Any]:
        """The pixel recipe, for provenance and listings."""
        return {
            "resize": self.input_size,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }
