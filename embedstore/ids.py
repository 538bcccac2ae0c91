"""Deterministic identifiers: file fingerprints and tile ids, so re-ingesting adds nothing; and tile ids
as numpy bytes arrays (sortable, searchable, no Python object per id)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

_SAMPLE_BYTES = 1 << 20  # files are fingerprinted from their size, first and last MiB


def file_fingerprint(path: Path) -> str:
    """A content fingerprint: hash of the size and the first and last MiB (whole file when small)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_SAMPLE_BYTES))
        if size > 2 * _SAMPLE_BYTES:
            handle.seek(size - _SAMPLE_BYTES)
            digest.update(handle.read(_SAMPLE_BYTES))
        elif size > _SAMPLE_BYTES:
            digest.update(handle.read())
    return digest.hexdigest()


def source_id_for(fingerprint: str) -> str:
    """Sources are identified by content, so the same file under another path is the same source."""
    return "src_" + fingerprint[:20]


def tile_id_for(fingerprint: str, level: int, x: int, y: int, size0: int, mpp: float | None) -> str:
    """A tile id from the source content and the tile's geometry."""
    key = f"{fingerprint}|{level}|{x}|{y}|{size0}|{'' if mpp is None else f'{mpp:.6g}'}"
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def id_bytes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The UTF-8 bytes of each id as a numpy bytes array ("S", zero-padded to the longest), copied from the
    Arrow buffers without a Python object per id. Sorts as the ids do (UTF-8 keeps code point order)."""
    if isinstance(ids, pa.ChunkedArray):
        parts = [id_bytes(chunk) for chunk in ids.chunks]
        return np.concatenate(parts) if parts else np.empty(0, "S1")
    large = pa.types.is_large_string(ids.type) or pa.types.is_large_binary(ids.type)
    if not (large or pa.types.is_string(ids.type) or pa.types.is_binary(ids.type)):
        return ids.cast(pa.binary()).to_numpy(zero_copy_only=False).astype("S")  # other types: per id
    ids = ids.cast(pa.large_binary() if large else pa.binary())
    n = len(ids)
    if n == 0:
        return np.empty(0, "S1")
    _, offsets_buffer, data_buffer = ids.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64 if large else np.int32)[ids.offset : ids.offset + n + 1]
    lengths = np.diff(offsets)
    width = max(int(lengths.max()), 1)
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]] if data_buffer else np.empty(0)
    if (lengths == width).all():  # fixed-width ids (hex digests): one reshape
        return data.reshape(n, width).copy().view(f"S{width}").ravel()
    out = np.zeros((n, width), np.uint8)
    out[np.arange(width) < lengths[:, None]] = data  # row-major: each id's bytes, then zero padding
    return out.view(f"S{width}").ravel()


def id_strings(keys: np.ndarray) -> np.ndarray:
    """Bytes ids ("S", UTF-8) as a numpy str ("U") array."""
    try:
        return keys.astype("U")  # ASCII, in C
    except UnicodeDecodeError:
        return np.char.decode(keys, "utf-8").astype("U")


def encoded_ids(ids) -> np.ndarray:
    """str ids (a numpy "U" or object array, or any sequence of str) as a numpy bytes array ("S", UTF-8)."""
    ids = np.asarray(ids, dtype=str) if not isinstance(ids, np.ndarray) or ids.dtype.kind != "U" else ids
    if len(ids) == 0:
        return np.empty(0, "S1")
    try:
        return ids.astype("S")  # ASCII, in C
    except UnicodeEncodeError:
        return np.char.encode(ids, "utf-8").astype("S")
