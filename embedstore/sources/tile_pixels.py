"""A stored tile's RGB pixels: decoded from the tiles table, or re-read from its source (--no-pixels)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import EmbedstoreError
from .codecs import decode_tile
from .grid import read_size_at
from .regions import cut_point_tile, cut_slide_tile, load_rgb
from .slides import open_slide

# Columns of the tiles table needed to rebuild a tile's pixels.
TILE_COLUMNS = ["tile_id", "pixels", "source_id", "x", "y", "level", "size0", "width", "height"]
OPEN_SOURCES = 4  # slide handles / decoded images kept open per process


class TilePixels:
    """Turns tile rows (dicts with TILE_COLUMNS) into (H, W, 3) uint8 arrays.

    `sources` maps source_id -> (uri, kind) for tiles stored without pixels; it may be empty.
    """

    def __init__(self, sources: dict[str, tuple[str, str]] | None = None) -> None:
        self.sources = sources or {}
        self._open: OrderedDict[str, Any] = OrderedDict()

    def rgb(self, tile: dict[str, Any]) -> np.ndarray:
        if tile["pixels"] is not None:
            try:
                return decode_tile(tile["pixels"])
            except Exception as error:  # Pillow raises several types for damaged bytes
                raise EmbedstoreError(
                    f"tile {tile['tile_id']}: stored pixels do not decode ({error}); re-ingest its source"
                ) from None
        uri, kind = self.sources.get(tile["source_id"], (None, None))
        if uri is None:
            raise EmbedstoreError(
                f"tile {tile['tile_id']} has no stored pixels and its source {tile['source_id']} is not in "
                "the sources table; re-ingest it"
            )
        try:
            if kind == "image":
                return load_rgb(Path(uri))
            if kind == "slide":
                return self._slide_tile(uri, tile)
            return self._point_tile(uri, tile)
        except Exception as error:  # OpenSlide, Pillow and SourceError for missing or damaged files
            raise EmbedstoreError(
                f"tile {tile['tile_id']} has no stored pixels and reading it from {uri} failed ({error}); "
                "restore the file, or re-ingest with pixels"
            ) from None

    def close(self) -> None:
        for handle in self._open.values():
            if hasattr(handle, "close"):
                handle.close()
        self._open.clear()

    def _handle(self, uri: str, kind: str) -> Any:
        if uri in self._open:
            self._open.move_to_end(uri)
            return self._open[uri]
        handle = open_slide(Path(uri)) if kind == "slide" else load_rgb(Path(uri))
        self._open[uri] = handle
        while len(self._open) > OPEN_SOURCES:
            _, old = self._open.popitem(last=False)
            if hasattr(old, "close"):
                old.close()
        return handle

    def _slide_tile(self, uri: str, tile: dict[str, Any]) -> np.ndarray:
        """As ingest reads it: the region at `level`, resized to the stored size."""
        slide = self._handle(uri, "slide")
        level = int(tile["level"])
        read_size = read_size_at(tile["size0"], float(slide.level_downsamples[level]))
        return cut_slide_tile(slide, tile["x"], tile["y"], level, read_size, tile["width"], tile["height"])

    def _point_tile(self, uri: str, tile: dict[str, Any]) -> np.ndarray:
        """As ingest cuts it: a window of the image, padded with white outside it."""
        image = self._handle(uri, "points")
        return cut_point_tile(image, tile["x"], tile["y"], tile["width"], tile["height"])
