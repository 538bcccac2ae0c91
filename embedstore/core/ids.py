"""Deterministic identifiers: file fingerprints and tile ids, so re-ingesting adds nothing; and tile ids
as numpy bytes arrays (sortable, searchable, no Python object per id)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Self

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


def id_keys(ids) -> np.ndarray:
    """Ids in any form as a numpy bytes array ("S", UTF-8): an Arrow string array or chunked array, a
    numpy bytes array (kept), a numpy str/object array or any sequence of str."""
    if isinstance(ids, pa.Array | pa.ChunkedArray):
        return id_bytes(ids)
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
        return ids
    return encoded_ids(ids)


class IdLookup:
    """Positions of ids in a fixed array of ids, by binary search over their sorted UTF-8 bytes: built once
    (O(n log n)), then each lookup costs O(batch log n) with no Python object per id. The one sorted-id
    lookup of the project (the tables' join, the searcher, the probe and the heads all use it).

    `sorted` holds the ids sorted; `order[i]` is the position in the ids given of `sorted[i]` (None when
    they were given sorted and unique, `from_sorted`). Ids may repeat: `find` gives the first position of
    a repeated id, or the last with `last=True`.
    """

    __slots__ = ("order", "sorted")

    def __init__(self, ids=()) -> None:
        """ids: an Arrow string array, a numpy bytes or str array, or any sequence of str."""
        keys = id_keys(ids)
        self.order: np.ndarray | None = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]

    @classmethod
    def from_sorted(cls, keys: np.ndarray) -> Self:
        """Ids already sorted and unique as a numpy bytes array (kept, not copied): positions are theirs."""
        made = cls.__new__(cls)
        made.order, made.sorted = None, keys
        return made

    def __len__(self) -> int:
        return len(self.sorted)

    def find(self, ids, *, last: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(position of each id among those given, whether it is there); ids in any form `id_keys` takes."""
        keys = id_keys(ids)
        if len(self.sorted) == 0 or len(keys) == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
        if last:
            at = (np.searchsorted(self.sorted, keys, side="right") - 1).clip(min=0)
        else:
            at = np.searchsorted(self.sorted, keys).clip(max=len(self.sorted) - 1)
        found = self.sorted[at] == keys
        return (at if self.order is None else self.order[at]), found

    def contains(self, ids) -> np.ndarray:
        """Whether each id is one of the set."""
        return self.find(ids)[1]
