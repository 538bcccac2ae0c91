"""Small real data made by the tests themselves (pyramidal TIFF slides, image tiles) and shared helpers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

SLIDE_MPP = 0.5
TISSUE = (214, 120, 180)  # an eosin-pink that tissue detection must find


def synthetic_slide(height: int = 1536, width: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An RGB slide: white glass with one ellipse of textured pink tissue; returns (pixels, tissue mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((xx - width * 0.45) / (width * 0.3)) ** 2 + ((yy - height * 0.5) / (height * 0.3)) ** 2 <= 1.0
    image = np.full((height, width, 3), 245, dtype=np.uint8)
    noise = rng.integers(-25, 25, size=(height, width, 3))
    image[mask] = np.clip(np.array(TISSUE) + noise[mask], 0, 255).astype(np.uint8)
    return image, mask


def write_pyramid(path: Path, image: np.ndarray, mpp: float | None = SLIDE_MPP, levels: int = 3) -> Path:
    """A tiled, lossless (deflate) pyramidal TIFF that OpenSlide reads as generic-tiff."""
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            pixels = image[:: 2**level, :: 2**level]
            extra = {}
            if mpp is not None:
                extra = {"resolution": (1e4 / (mpp * 2**level),) * 2, "resolutionunit": "CENTIMETER"}
            tif.write(
                pixels,
                tile=(256, 256),
                photometric="rgb",
                compression="zlib",
                subfiletype=0 if level == 0 else 1,
                **extra,
            )
    return path


def write_image(path: Path, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(path)
    return path


def write_tiles(folder: Path, n: int, seed: int, side: int = 32) -> Path:
    """n small H&E-ish PNG tiles in an ImageFolder layout (classes a / b)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        klass = folder / ("a" if i % 2 else "b")
        klass.mkdir(parents=True, exist_ok=True)
        base = np.array([200, 120, 190]) if i % 2 else np.array([150, 90, 170])
        rgb = np.clip(base + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(klass / f"tile_{seed}_{i}.png")
    return folder


def table_versions(store) -> dict[str, int]:
    return {name: int(store.catalog.dataset(name).version) for name in store.catalog.table_names()}


def key_counts(store, table: str, key: str) -> tuple[int, int]:
    """(rows, distinct keys) of a table."""
    values = store.catalog.read(table, columns=[key]).column(key).to_pylist()
    return len(values), len(set(values))


def clustered_vectors(
    n: int, dim: int = 32, clusters: int = 20, seed: int = 0, spread: float = 0.3
) -> np.ndarray:
    """float32 (n, dim): points around `clusters` random centres, on top of a shared offset (like real
    embeddings, which share a large common component)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, n)
    return (3.0 + centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32)


def add_vectors(store, key: str, vectors: np.ndarray) -> None:
    """`vectors` (view 0) as backbone `key`'s embeddings of tiles t000000, t000001, ... (a stand-in
    provenance: the vectors are given, not computed)."""
    from embedstore.embed.writer import EmbeddingWriter
    from embedstore.storage.embedding_tables import Provenance, table_name

    provenance = Provenance.given(key, vectors.shape[1])
    tile_ids = [f"t{i:06d}" for i in range(len(vectors))]
    writer = EmbeddingWriter(store.catalog, table_name(key), provenance)
    writer.write(tile_ids, np.zeros(len(tile_ids), np.int16), np.asarray(vectors, dtype=np.float32))


def vector_store(path: Path, vectors: np.ndarray, slides: int = 4, key: str = "synthetic.vectors"):
    """A store whose tiles (metadata only, no pixels) carry the given vectors in `emb__<key>`.

    Tile i is `t{i:06d}` on slide `slide{i % slides}` (source `src{i % slides}`), dataset `even`/`odd`.
    Search tests use it to control the vectors exactly; real embedding is tested in tests/embed.
    """
    import pyarrow as pa

    import embedstore
    from embedstore.core.schema import TILES, TILES_SCHEMA

    store = embedstore.init(path)
    n = len(vectors)
    rows = [
        {
            "tile_id": f"t{i:06d}",
            "source_id": f"src{i % slides}",
            "x": 32 * (i // slides),
            "y": 0,
            "level": 0,
            "size0": 32,
            "width": 32,
            "height": 32,
            "slide": f"slide{i % slides}",
            "dataset": "even" if i % 2 == 0 else "odd",
        }
        for i in range(n)
    ]
    store.catalog.insert_missing(TILES, pa.Table.from_pylist(rows, schema=TILES_SCHEMA))
    add_vectors(store, key, vectors)
    return store


def add_task(store, task: str, labels: dict[str, str]) -> None:
    """Import `labels` (tile_id -> label) as `task` through a CSV, as a user would."""
    path = Path(store.root).parent / f"{task}.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["tile_id", "label"])
        writer.writerows(labels.items())
    store.import_labels(task, path)


def generated_keys(start: int, count: int) -> list[str]:
    """`count` distinct embedding-table keys ("<24 hex digits>:0", like a tile id and view 0) from
    number `start` on: the same numbers give the same keys in every process."""
    return [f"{(i * 0x9E3779B97F4A7C15) % 2**96:024x}:0" for i in range(start, start + count)]


def generated_rows(schema, start: int, count: int):
    """Rows of an embedding table's `schema` (row_key, tile_id, view, vector) for generated_keys."""
    import pyarrow as pa

    keys = generated_keys(start, count)
    dim = schema.field("vector").type.list_size
    values = np.arange(start, start + count, dtype=np.float32).repeat(dim) % 1000
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(values).cast(schema.field("vector").type.value_type), dim
    )
    return pa.table(
        [pa.array(keys), pa.array([k[:-2] for k in keys]), pa.array(np.zeros(count, np.int16)), vectors],
        schema=schema,
    )
