"""Embedding the store's tiles with backbones into `emb__<key>` tables.

`options` (EmbedOptions, EmbedReport) is light and importable without torch; `local.embed` is the
executor on this machine; `writer.EmbeddingWriter` is the commit contract every executor shares.
`check_backbones` (fail fast on unknown keys, before any work) loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports
from .options import EmbedOptions, EmbedProgress, EmbedReport

if TYPE_CHECKING:
    from .plan import check_backbones

_LAZY = {"check_backbones": ".plan"}  # the plan pulls in the backbones: `embedstore --help` stays fast

__all__ = ["EmbedOptions", "EmbedProgress", "EmbedReport", "check_backbones"]


__getattr__ = lazy_exports(__name__, _LAZY)
