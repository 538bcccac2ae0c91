"""Ingesting slides, image folders, manifests and point annotations into the store.

`options` (IngestOptions, IngestReport) is light and importable without OpenSlide; `local.ingest` is
the executor on this machine; `writer.IngestWriter` is the commit contract every executor shares.
"""

from .options import IngestOptions, IngestReport

__all__ = ["IngestOptions", "IngestReport"]
