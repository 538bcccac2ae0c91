"""Similarity search: FAISS (or LanceDB) indexes bound to table versions, queries with fusion, negatives
and filters, and a review page. Most users call `store.index(...)` and `store.search(...)`."""

from .configs import FlatConfig, HnswConfig, IvfConfig, IvfPqConfig, LanceConfig
from .hits_table import shown_task
from .indexes import StaleIndexError, build_index, list_indexes, open_index
from .manifest import IndexManifest
from .options import IndexOptions, SearchOptions
from .searcher import Searcher, SearchResult

__all__ = [
    "FlatConfig",
    "HnswConfig",
    "IndexManifest",
    "IndexOptions",
    "IvfConfig",
    "IvfPqConfig",
    "LanceConfig",
    "SearchOptions",
    "SearchResult",
    "Searcher",
    "StaleIndexError",
    "build_index",
    "list_indexes",
    "open_index",
    "shown_task",
]
