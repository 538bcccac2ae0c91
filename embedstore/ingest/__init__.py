"""Ingesting slides, image folders, manifests and point annotations into the store.

`options` (IngestOptions, IngestReport) is light and importable without OpenSlide; `local.ingest` is
the executor on this machine (with engine="ray" it hands over to `ray_engine`, which reads the tiles on
Ray workers); `run.prepare` is the plan every executor starts from, and `writer.IngestWriter` the commit
contract they share.
"""

from .options import IngestOptions, IngestReport

__all__ = ["IngestOptions", "IngestReport"]
