"""Deterministic identifiers: file fingerprints and tile ids, so re-ingesting adds nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
