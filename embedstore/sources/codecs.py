"""Encoding tile pixels for the tiles table, and decoding them back."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ..core.schema import PIXEL_CODECS as CODECS

LOSSLESS_MAX_SIDE = 128  # with codec "auto", tiles up to this side are stored lossless (PNG)


def resolve_codec(codec: str, side: int) -> str:
    """The codec actually used for a tile of this side: "auto" picks PNG for small tiles, JPEG otherwise."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    if codec == "auto":
        return "png" if side <= LOSSLESS_MAX_SIDE else "jpeg"
    return codec


def encode_tile(rgb: np.ndarray, codec: str, jpeg_quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG or JPEG bytes."""
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    buffer = io.BytesIO()
    if codec == "png":
        image.save(buffer, format="PNG", compress_level=3)
    elif codec == "jpeg":
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    else:
        raise ValueError(f"cannot encode with codec {codec!r}")
    return buffer.getvalue()


def decode_tile(data: bytes) -> np.ndarray:
    """Decode stored tile bytes into an (H, W, 3) uint8 array."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def sniff_format(data: bytes) -> str | None:
    """ "png" or "jpeg" from the file's magic bytes, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None
