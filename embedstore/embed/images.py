"""Embedding image files on the fly, exactly as a table's tiles were embedded (for search queries)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.errors import BackboneError
from ..embeddings import EmbeddingTable
from ..sources.regions import load_rgb
from ..storage.catalog import Catalog
from .forward import Forward
from .input import fill_batch


def embed_image_files(
    catalog: Catalog, table: str, paths: Sequence[Path]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(vectors float32 (n, dim), the decoded RGB images) of image files, with the backbone, weights,
    input size, resize method, normalisation and precision that `table`'s provenance records."""
    provenance = EmbeddingTable.of(catalog, table).provenance
    images = [load_rgb(Path(p)) for p in paths]  # SourceError naming an unreadable file
    from ..backbones import get_backbone

    backbone = get_backbone(provenance.backbone)
    if backbone.weights_sha256() != provenance.weights_sha256:
        raise BackboneError(
            f"backbone {provenance.backbone!r} now has other weights than those that wrote {table!r}; "
            "query with --tile ids or --vectors instead of images, or re-embed the store"
        )
    size = provenance.input_size
    pixels = torch.empty((len(images), size, size, 3), dtype=torch.uint8)
    fill_batch(pixels, images, size, provenance.resize)
    forward = Forward(
        backbone.build(),
        torch.device("cpu"),
        provenance.precision,
        channels_last=True,
        compile=False,
        batch_size=len(images),
    )
    return forward(pixels.permute(0, 3, 1, 2)).numpy().astype(np.float32), images
