"""What every embed executor starts from: the backbone and its table (refused before any work when the
vectors would not fit it), the rows the table lacks, and the checks on computed vectors."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import polars as pl
import torch

from ..core.errors import BackboneError, EmbedstoreError
from ..core.schema import SOURCES, TILES
from ..core.validation import Name, check_value
from ..embeddings import tile_filter
from ..runtime.resources import resolve_device
from ..storage.catalog import Catalog
from ..storage.embedding_tables import Provenance, check_compatible, recorded_provenance, table_name
from . import defaults
from . import input as embed_input
from .options import EmbedOptions, EmbedReport

if TYPE_CHECKING:
    from ..backbones import Backbone


@dataclass
class RunPlan:
    """What every executor starts from: the target table, the tiles (a pinned version) and the
    (pos, tile_id, view) rows the table lacks, and the report to fill."""

    target: _Target
    tiles_ds: Any  # the tiles table, pinned: tiles added meanwhile wait for the next run
    tiles: pl.DataFrame  # pos, tile_id, pixel_format, source_id (of the tiles --where matches)
    missing: pl.DataFrame  # pos, tile_id, view
    report: EmbedReport
    device: torch.device
    workers: int
    batch_size: int
    started: float
    jpeg: embed_input.DeviceJpeg | None = None  # decodes stored JPEG tiles on the device (local engine)

    @property
    def wanted(self) -> Provenance:
        return self.target.wanted

    def finish(self) -> EmbedReport:
        self.report.seconds = time.perf_counter() - self.started
        return self.report

    def compact(self, catalog: Catalog, enabled: bool) -> None:
        """The automatic compaction of the run's table (`Catalog.upkeep`), when it wrote rows."""
        if enabled and self.report.rows_written:
            self.report.compaction = catalog.upkeep([self.target.name])


def plan_run(catalog: Catalog, backbone_key: str, options: EmbedOptions) -> RunPlan:
    """Resolve the backbone and its table (refusing, before any work, vectors that would not fit it)
    and find the missing rows; records the views' augmentations when this run adds the first views."""
    check_value("--backbone", backbone_key, Name())
    started = time.perf_counter()
    tiles_ds = catalog.dataset(TILES)
    if tiles_ds.count_rows() == 0:
        raise EmbedstoreError("the store has no tiles; run `embedstore ingest` first")
    tiles, total = selected_tiles(catalog, tiles_ds, options.where)
    target = _Target.resolve(catalog, backbone_key, options)
    device = resolve_device(options.device)
    wanted = target.wanted
    present = present_rows(catalog, target.name)
    missing = embed_input.plan_missing(tiles.select("pos", "tile_id"), present, options.views, options.limit)
    jpeg = None
    if options.engine == "local" and missing.height:
        size = target.backbone.spec.input_size
        jpeg = embed_input.device_jpeg(options.decode, device, size, options.resize)
    share = device_decoded_share(tiles, missing) if jpeg is not None else 0.0
    fitting = defaults.for_device(device.type, share)
    workers = fitting.workers if options.workers is None else options.workers
    batch_size = fitting.batch_size if options.batch_size is None else options.batch_size
    report = EmbedReport(
        target.name,
        wanted.backbone,
        views=options.views,
        precision=wanted.precision,
        store_dtype=wanted.store_dtype,
        device=str(device),
        batch_size=batch_size,
        workers=workers,
    )
    if jpeg is not None:
        report.notes.append(f"stored JPEG tiles decoded on {device.type} (torchvision)")
    report.tiles_total, report.where = total, options.where
    report.tiles_matched = tiles.height if options.where is not None else None
    report.rows_present = present.join(tiles.select("tile_id"), on="tile_id", how="semi").height
    if missing.height:
        target.record_augment(catalog, options.views)
    return RunPlan(target, tiles_ds, tiles, missing, report, device, workers, batch_size, started, jpeg)


def device_decoded_share(tiles: pl.DataFrame, missing: pl.DataFrame) -> float:
    """The share of the missing rows that device decoding takes: unaugmented rows of stored JPEG tiles."""
    if missing.height == 0:
        return 0.0
    rows = missing.join(tiles.select("pos", "pixel_format"), on="pos", how="left")
    on_device = rows.filter((pl.col("view") == 0) & (pl.col("pixel_format") == "jpeg")).height
    return on_device / missing.height


def selected_tiles(catalog: Catalog, tiles_ds: Any, where: str | None) -> tuple[pl.DataFrame, int]:
    """(pos, tile_id, pixel_format, source_id) of the tiles `where` matches (all without it), `pos` their
    row in the pinned tiles table, and how many tiles the table holds. A `where` that is not a filter over
    the tile columns, or that matches no tile, is refused (EmbedstoreError) before any model is built."""
    predicate = tile_filter(catalog, where) if where is not None else None
    # from_arrow of a Table is a DataFrame (a Series only for an Array): the casts below say so
    tiles = cast(
        pl.DataFrame, pl.from_arrow(tiles_ds.to_table(columns=["tile_id", "pixel_format", "source_id"]))
    )
    tiles = tiles.with_row_index("pos")
    if predicate is None:
        return tiles, tiles.height
    matched = cast(pl.DataFrame, pl.from_arrow(tiles_ds.to_table(columns=["tile_id"], filter=predicate)))
    selected = tiles.join(matched, on="tile_id", how="semi").sort("pos")
    if selected.height == 0:
        raise EmbedstoreError(
            f"nothing to embed: no tile matches --where {where!r} (of {tiles.height} tiles"
            f"{_datasets(tiles_ds)}); check the expression"
        )
    return selected, tiles.height


def _datasets(tiles_ds: Any, shown: int = 10) -> str:
    """'; datasets: a, b' naming the store's datasets (the first `shown`), or '' when none is set."""
    names = sorted({v for v in tiles_ds.to_table(columns=["dataset"]).column(0).to_pylist() if v})
    more = ", ..." if len(names) > shown else ""
    return f"; datasets: {', '.join(names[:shown])}{more}" if names else ""


def present_rows(catalog: Catalog, name: str) -> pl.DataFrame:
    """(tile_id, view) of every row the table already holds (empty frame when there is no table)."""
    if not catalog.has_table(name):
        return pl.DataFrame(schema={"tile_id": pl.String, "view": pl.Int16})
    found = catalog.read(name, columns=["tile_id", "view"])
    return cast(pl.DataFrame, pl.from_arrow(found)).cast({"view": pl.Int16})


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the vectors (read from package metadata: importing timm
    only for its version would cost seconds)."""
    from importlib.metadata import version

    from .._version import __version__

    installed = {name: version(name) for name in ("timm", "pylance", "pyarrow")}
    return {"embedstore": __version__, "torch": torch.__version__, **installed}


def provenance_for(
    backbone: Backbone, resize: str, precision: str, store_dtype: str, augment: tuple[str, ...]
) -> Provenance:
    """The provenance a run with this backbone and these settings records."""
    spec = backbone.spec
    return Provenance(
        backbone=spec.key,
        weights_sha256=backbone.weights_sha256(),
        dim=spec.dim,
        input_size=spec.input_size,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        resize=resize,
        precision=precision,
        store_dtype=store_dtype,
        augment=tuple(augment),
        weights_source=spec.weights_source,
        mpp=spec.mpp,
        layer=getattr(backbone, "layer", ""),
        preset=spec.preset,
        pooling=spec.pooling,
        crop=spec.crop,
        versions=library_versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


@dataclass
class _Target:
    """The backbone, its table's name, the provenance it records (None: no table yet) and this run's."""

    backbone: Backbone
    name: str
    recorded: Provenance | None
    wanted: Provenance

    @classmethod
    def resolve(cls, catalog: Catalog, key: str, options: EmbedOptions) -> _Target:
        """Find the table and refuse (before any work) a run whose vectors would not fit it."""
        backbone = resolve_backbone(key, options.weights)
        name = table_name(backbone.spec.key)
        recorded = (
            recorded_provenance(catalog.dataset(name).schema, name) if catalog.has_table(name) else None
        )
        precision = options.precision or (recorded.precision if recorded else "fp32")
        store_dtype = options.store_dtype or (recorded.store_dtype if recorded else "float32")
        augment = options.augment if options.views else (recorded.augment if recorded else ())
        wanted = provenance_for(backbone, options.resize, precision, store_dtype, augment)
        if recorded is not None:
            check_compatible(recorded, wanted, name, options.views)
        return cls(backbone, name, recorded, wanted)

    def record_augment(self, catalog: Catalog, views: int) -> None:
        """The first run that adds views to an existing table records its augmentations there."""
        if self.recorded is None or not views or self.recorded.augment:
            return
        updated = dataclasses.replace(self.recorded, augment=self.wanted.augment)
        metadata = {k.decode(): v.decode() for k, v in updated.to_metadata().items()}
        catalog.dataset(self.name).replace_schema_metadata(metadata)


def resolve_backbone(key: str, weights: str | Path | None) -> Backbone:
    from ..backbones import get_backbone

    backbone = get_backbone(key, weights=weights)
    ok, why = backbone.available()
    if not ok:
        raise BackboneError(f"backbone {key!r} cannot run here: {why}")
    return backbone


def sources_without_pixels(
    catalog: Catalog, tiles: pl.DataFrame, missing: pl.DataFrame
) -> dict[str, tuple[str, str]]:
    """(uri, kind) of the sources whose missing tiles have no stored pixels (usually none)."""
    needed = tiles.join(missing.select("pos").unique(), on="pos", how="semi").filter(
        pl.col("pixel_format").is_null()
    )
    ids = set(needed["source_id"].drop_nulls().to_list())
    if not ids:
        return {}
    rows = catalog.read(SOURCES, columns=["source_id", "uri", "kind"]).to_pylist()
    return {r["source_id"]: (r["uri"], r["kind"]) for r in rows if r["source_id"] in ids}


def checked_vectors(
    vectors: torch.Tensor, batch: embed_input.PixelBatch, store_dtype: str, key: str
) -> np.ndarray:
    """Vectors as the stored dtype; EmbedstoreError naming the first tile with a NaN / Inf."""
    with np.errstate(over="ignore"):
        array = vectors.numpy().astype(store_dtype, copy=False)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        cause = (
            "overflows float16; use --store-dtype float32"
            if np.isfinite(vectors[i].numpy()).all()
            else ("is NaN/Inf; check the weights and --precision")
        )
        raise EmbedstoreError(
            f"backbone {key!r} gave tile {batch.tile_ids[i]} (view {int(batch.views[i])}) a vector that "
            f"{cause}; "
            "nothing of the current chunk was written"
        )
    return array


def check_backbones(keys: Iterable[str], weights: str | Path | None = None) -> None:
    """Fail fast, before any work, when one of several backbone keys is unknown or cannot run here."""
    for key in keys:
        check_value("--backbone", key, Name())
        resolve_backbone(key, weights)
