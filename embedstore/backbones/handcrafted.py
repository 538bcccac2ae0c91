"""A hand-crafted colour/texture feature extractor as a torch module: a pretraining-free baseline.

Features (DIM = 51), in this order (names in FEATURE_NAMES):
  colour (21): for each HED stain channel (haematoxylin, eosin, DAB; skimage.color.rgb2hed's
      Ruifrok-Johnston matrix applied to optical density): mean, std, p10, p25, p50, p75, p90.
  gradient (4): Sobel gradient magnitude of the grey image: mean, std, p50, p90.
  laplacian (2): variance and mean |response| of the 3x3 Laplacian of the grey image.
  gabor (24): a complex Gabor bank (wavelength 4 px, 4 orientations) at 3 scales (full, 1/2, 1/4 resolution,
      i.e. wavelengths 4, 8, 16 px): mean and std of the response magnitude.
All computed in float32 (autocast is switched off inside), per image, so results do not depend on the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from embedstore.backbones.base import Backbone, state_dict_sha256
from embedstore.backbones.spec import BackboneSpec
from embedstore.sources.stains import RUIFROK_HED

VERSION = "color_texture/1"
INPUT_SIZE = 224
STAINS = ("haematoxylin", "eosin", "dab")
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
ORIENTATIONS_DEG = (0, 45, 90, 135)
SCALES = (1, 2, 4)
GABOR_WAVELENGTH = 4.0

RGB_FROM_HED = RUIFROK_HED  # as skimage.color.rgb2hed uses them: rows not normalised
GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray


def _names() -> tuple[str, ...]:
    stats = ("mean", "std") + tuple(f"p{round(q * 100):02d}" for q in QUANTILES)
    names = [f"{stain}_{stat}" for stain in STAINS for stat in stats]
    names += ["sobel_mean", "sobel_std", "sobel_p50", "sobel_p90", "laplacian_var", "laplacian_absmean"]
    for scale in SCALES:
        for degrees in ORIENTATIONS_DEG:
            wavelength = int(GABOR_WAVELENGTH * scale)
            names += [f"gabor_w{wavelength}_o{degrees}_mean", f"gabor_w{wavelength}_o{degrees}_std"]
    return tuple(names)


FEATURE_NAMES = _names()
DIM = len(FEATURE_NAMES)


def hed_from_rgb_matrix() -> torch.Tensor:
    """The (3, 3) matrix mapping scaled optical density to HED: the inverse of RGB_FROM_HED, as in skimage."""
    return torch.linalg.inv(torch.tensor(RGB_FROM_HED, dtype=torch.float64)).float()


def rgb_to_hed(rgb: torch.Tensor, hed_from_rgb: torch.Tensor | None = None) -> torch.Tensor:
    """skimage.color.rgb2hed in torch: (B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) stain amounts (>= 0)."""
    matrix = hed_from_rgb_matrix() if hed_from_rgb is None else hed_from_rgb
    density = torch.log(rgb.clamp(min=1e-6)) / math.log(1e-6)
    return torch.einsum("bchw,cd->bdhw", density, matrix.to(density)).clamp(min=0)


def _gabor_bank(wavelength: float, orientations: tuple[int, ...]) -> torch.Tensor:
    """(2 * n, 1, k, k): even (cosine, zero-mean) and odd (sine) kernels per orientation, L1-normalised."""
    sigma = 0.56 * wavelength
    half = math.ceil(3 * sigma)
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    kernels = []
    for degrees in orientations:
        theta = math.radians(degrees)
        along = x * math.cos(theta) + y * math.sin(theta)
        across = -x * math.sin(theta) + y * math.cos(theta)
        envelope = torch.exp(-(along**2 + (0.5 * across) ** 2) / (2 * sigma**2))
        even = envelope * torch.cos(2 * math.pi * along / wavelength)
        even = even - envelope * (even.sum() / envelope.sum())
        odd = envelope * torch.sin(2 * math.pi * along / wavelength)
        kernels += [even / even.abs().sum(), odd / odd.abs().sum()]
    return torch.stack(kernels).unsqueeze(1).float()


def _quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """Linear-interpolated quantiles along the last dim (like numpy's default), via one sort."""
    ordered = values.sort(dim=-1).values
    positions = torch.tensor(qs, dtype=torch.float64) * (values.shape[-1] - 1)
    low = positions.floor().long()
    high = positions.ceil().long()
    weight = (positions - low).to(values)
    return ordered[..., low] * (1 - weight) + ordered[..., high] * weight


def _conv(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    pad = kernels.shape[-1] // 2
    return F.conv2d(F.pad(image, (pad, pad, pad, pad), mode="reflect"), kernels)


class ColorTextureNet(nn.Module):
    """RGB in [0, 1], (B, 3, H, W) -> (B, DIM) colour (HED) and texture (Sobel, Laplacian, Gabor) stats."""

    hed_from_rgb: torch.Tensor  # buffers, registered in __init__
    grey_weights: torch.Tensor
    sobel: torch.Tensor
    laplacian: torch.Tensor
    gabor: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("hed_from_rgb", hed_from_rgb_matrix())
        self.register_buffer("grey_weights", torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1))
        self.register_buffer("sobel", torch.stack([sobel_x, sobel_x.T]).unsqueeze(1))
        self.register_buffer("laplacian", laplacian.view(1, 1, 3, 3))
        self.register_buffer("gabor", _gabor_bank(GABOR_WAVELENGTH, ORIENTATIONS_DEG))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float().clamp(0, 1).contiguous()
            return torch.cat([self._colour(x), *self._texture(x)], dim=1)

    def _colour(self, rgb: torch.Tensor) -> torch.Tensor:
        hed = rgb_to_hed(rgb, self.hed_from_rgb).flatten(2)  # (B, 3, N)
        stats = [
            hed.mean(-1, keepdim=True),
            hed.std(-1, correction=0, keepdim=True),
            _quantiles(hed, QUANTILES),
        ]
        return torch.cat(stats, dim=-1).flatten(1)  # (B, 21), stain-major

    def _texture(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        grey = (rgb * self.grey_weights).sum(1, keepdim=True)
        gradient = _conv(grey, self.sobel)
        magnitude = gradient.square().sum(1).sqrt().flatten(1)
        sobel = torch.cat(
            [
                magnitude.mean(1, keepdim=True),
                magnitude.std(1, correction=0, keepdim=True),
                _quantiles(magnitude, (0.5, 0.9)),
            ],
            dim=1,
        )
        response = _conv(grey, self.laplacian).flatten(1)
        laplacian = torch.stack([response.var(1, correction=0), response.abs().mean(1)], dim=1)
        gabor = []
        for scale in SCALES:
            level = grey if scale == 1 else F.avg_pool2d(grey, scale)
            pairs = _conv(level, self.gabor).unflatten(1, (len(ORIENTATIONS_DEG), 2))
            energy = pairs.square().sum(2).sqrt().flatten(2)  # (B, orientations, N)
            gabor.append(torch.stack([energy.mean(-1), energy.std(-1, correction=0)], dim=-1).flatten(1))
        return [sobel, laplacian, *gabor]


class HandcraftedBackbone(Backbone):
    """`handcrafted.color_texture`: ColorTextureNet behind the usual pixel wrapper (mean 0, std 1)."""

    def __init__(self) -> None:
        super().__init__(
            BackboneSpec(
                key="handcrafted.color_texture",
                architecture="color_texture",
                dim=DIM,
                input_size=INPUT_SIZE,
                mean=(0.0, 0.0, 0.0),
                std=(1.0, 1.0, 1.0),
                mpp=None,
                weights_source=f"none: fixed filters ({VERSION})",
                licence="Apache-2.0",
                description=f"{DIM} colour (HED stain) and texture (Sobel, Laplacian, Gabor) statistics",
            )
        )

    def _create(self, with_classifier: bool) -> nn.Module:
        if with_classifier:
            raise self._no_classifier()
        return ColorTextureNet().eval()

    def _compute_sha256(self) -> str:
        return state_dict_sha256(ColorTextureNet().state_dict(), prefix=VERSION)
