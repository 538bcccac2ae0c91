"""Embedding the store's tiles with backbones into `emb__<key>` tables.

`options` (EmbedOptions, EmbedReport) is light and importable without torch; `local.embed` is the
executor on this machine; `writer.EmbeddingWriter` is the commit contract every executor shares.
"""

from .options import EmbedOptions, EmbedProgress, EmbedReport

__all__ = ["EmbedOptions", "EmbedProgress", "EmbedReport"]
