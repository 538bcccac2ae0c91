"""embedstore: an embedding store and vector database for histology tiles."""

from .errors import BackboneError, EmbedstoreError, NotAStoreError, SourceError
from .ingest import IngestOptions, IngestReport
from .store import Store, init, open

__version__ = "0.1.0"
__all__ = [
    "Store",
    "open",
    "init",
    "IngestOptions",
    "IngestReport",
    "EmbedstoreError",
    "NotAStoreError",
    "SourceError",
    "BackboneError",
    "__version__",
]
