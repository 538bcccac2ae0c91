"""embedstore: an embedding store and vector database for histology tiles.

    import embedstore
    store = embedstore.init("mystore", exist_ok=True)
    store.ingest(["pcam/"], task="metastasis")
    store.embed("tf_efficientnet_lite0.in1k")
    X, tile_ids, labels = store.embeddings("tf_efficientnet_lite0.in1k").task("metastasis").to_numpy()

The names below load on first use, so that `import embedstore` (and `embedstore --help`) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .core.errors import BackboneError, EmbedstoreError, NotAStoreError, SourceError, TableDamagedError
from .core.lazy import lazy_exports
from .core.moved import MOVED_MODULES, alias_modules
from .runtime.allocator import cap_malloc_arenas

cap_malloc_arenas()  # before Lance starts its reader threads (see embedstore.runtime.allocator)
alias_modules(MOVED_MODULES)  # old module paths (before the folders by layer) import, with a warning

if TYPE_CHECKING:
    from .embed.options import EmbedOptions, EmbedReport
    from .ingest.options import IngestOptions, IngestReport
    from .maintenance.label_options import LabelImportOptions, LabelImportReport
    from .maintenance.tile_listing import TileListOptions
    from .maintenance.upgrade import upgrade
    from .probe.options import ProbeOptions
    from .store import Store, init, open

_LAZY = {
    "Store": ".store",
    "open": ".store",
    "init": ".store",
    "upgrade": ".maintenance.upgrade",
    "IngestOptions": ".ingest.options",
    "IngestReport": ".ingest.options",
    "LabelImportOptions": ".maintenance.label_options",
    "LabelImportReport": ".maintenance.label_options",
    "TileListOptions": ".maintenance.tile_listing",
    "EmbedOptions": ".embed.options",
    "EmbedReport": ".embed.options",
    "ProbeOptions": ".probe.options",
}

__all__ = [
    "Store",
    "open",
    "init",
    "upgrade",
    "IngestOptions",
    "IngestReport",
    "LabelImportOptions",
    "LabelImportReport",
    "TileListOptions",
    "EmbedOptions",
    "EmbedReport",
    "ProbeOptions",
    "EmbedstoreError",
    "NotAStoreError",
    "TableDamagedError",
    "SourceError",
    "BackboneError",
    "__version__",
]


__getattr__ = lazy_exports(__name__, _LAZY)
