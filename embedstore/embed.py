"""Embed the store's tiles with a backbone into `emb__<key>`, incrementally and resumably.

Only (tile, view) rows missing from the table are computed. Vectors are appended in chunks, each one
atomic Lance append, so an interrupted run leaves whole chunks and the next run fills the rest: no
duplicates, no gaps. Decoding runs in DataLoader workers while the model runs (inline between batches
on CPUs of up to 4 cores, where that is faster; see `inference.default_workers`); writes run in a thread.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from . import embed_input
from .allocator import reuse_freed_memory
from .augment import AUGMENTATIONS, parse_augment
from .embedding_tables import (
    PRECISIONS,
    RESIZE_METHODS,
    STORE_DTYPES,
    Provenance,
    check_compatible,
    embedding_schema,
    present_rows,
    recorded_provenance,
    table_name,
)
from .errors import BackboneError, EmbedstoreError
from .inference import DEVICES, Forward, default_workers, resolve_device, torch_threads
from .schema import SOURCES, TILES

if TYPE_CHECKING:
    import lancedb

    from .backbones import Backbone
    from .store import Store


@dataclass
class EmbedProgress:
    """Handed to `on_chunk` after each chunk is durably written."""

    table: str
    rows_written: int  # by this run so far
    rows_total: int  # rows this run set out to write


@dataclass
class EmbedOptions:
    """How to embed. `precision` / `store_dtype` None: the table's own, or fp32 / float32 for a new table."""

    weights: str | Path | None = None  # a local weights file or timm model directory for the key
    batch_size: int = 64
    precision: str | None = None  # fp32 | bf16 | fp16 (autocast)
    compile: bool = False  # torch.compile the model (slow first batch, faster after)
    device: str = "auto"  # auto | cpu | cuda
    channels_last: bool = True
    store_dtype: str | None = None  # float32 | float16
    views: int = 0  # augmented views per tile besides view 0
    augment: tuple[str, ...] | str = AUGMENTATIONS
    workers: int | None = None  # decode processes; 0: in this thread; None: see inference.default_workers
    threads: int | None = None  # torch intra-op threads during the run; None: torch's setting
    chunk_rows: int = 4096  # rows per atomic append
    prefetch: int = 4  # batches each worker decodes ahead
    resize: str = "bicubic"  # bicubic | bilinear (antialiased, Pillow-equivalent), to the input size
    reuse_memory: bool = True  # on CPU, keep freed memory for reuse (see embedstore.allocator)
    progress: bool = True
    limit: int | None = None  # embed at most this many tiles
    on_chunk: Callable[[EmbedProgress], None] | None = None

    def validate(self) -> None:
        """One clear message for the first bad option."""
        self.augment = parse_augment(self.augment)
        checks = [
            (self.batch_size >= 1, f"--batch-size {self.batch_size} must be at least 1"),
            (
                self.precision in (None, *PRECISIONS),
                f"--precision {self.precision!r}: use {'|'.join(PRECISIONS)}",
            ),
            (self.device in DEVICES, f"--device {self.device!r}: use {'|'.join(DEVICES)}"),
            (
                self.store_dtype in (None, *STORE_DTYPES),
                f"--store-dtype {self.store_dtype!r}: use float32|float16",
            ),
            (self.views >= 0, f"--views {self.views} must be 0 or more"),
            (self.views == 0 or bool(self.augment), "--views needs at least one --augment operation"),
            (self.views < 2**15, f"--views {self.views} is too many"),
            (self.workers is None or self.workers >= 0, f"--workers {self.workers} must be 0 or more"),
            (self.threads is None or self.threads >= 1, f"--threads {self.threads} must be at least 1"),
            (self.chunk_rows >= 1, f"chunk_rows {self.chunk_rows} must be at least 1"),
            (self.prefetch >= 1, f"prefetch {self.prefetch} must be at least 1"),
            (self.resize in RESIZE_METHODS, f"resize {self.resize!r}: use {'|'.join(RESIZE_METHODS)}"),
            (self.limit is None or self.limit >= 0, f"--limit {self.limit} must be 0 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise EmbedstoreError(message)


@dataclass
class EmbedReport:
    table: str
    backbone: str
    rows_written: int = 0
    tiles_embedded: int = 0  # distinct tiles with at least one new row
    rows_present: int = 0  # rows the table already had for current tiles
    tiles_total: int = 0
    views: int = 0
    seconds: float = 0.0  # the whole call
    pipeline_seconds: float = 0.0  # read + decode + forward + write, after the model is built
    precision: str = "fp32"
    store_dtype: str = "float32"
    device: str = "cpu"
    batch_size: int = 0
    workers: int = 0
    threads: int = 0
    table_version: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tiles_per_s(self) -> float:
        return self.tiles_embedded / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.rows_written == 0:
            line = f"{self.table}: up to date ({self.rows_present} rows for {self.tiles_total} tiles)"
        else:
            per_tile = f" x {self.views + 1} views" if self.views else ""
            decode = f"{self.workers} decode worker(s)" if self.workers else "decoding inline"
            line = (
                f"{self.table}: {self.rows_written} rows written ({self.tiles_embedded} tiles{per_tile}), "
                f"{self.rows_present} already present; {self.seconds:.1f} s, {self.tiles_per_s:.1f} tiles/s "
                f"({self.precision}, {self.device}, batch {self.batch_size}, {decode}, "
                f"{self.threads} torch thread(s), stored as {self.store_dtype})"
            )
        return "\n".join([line, *(f"note: {note}" for note in self.notes)])

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "tiles_per_s": self.tiles_per_s, "rows_per_s": self.rows_per_s}


def embed(store: Store, backbone_key: str, options: EmbedOptions | None = None, **kwargs: Any) -> EmbedReport:
    """Embed every tile (and `views` augmented copies) not yet in `emb__<key>`; see EmbedOptions."""
    options = options or EmbedOptions(**kwargs)
    options.validate()
    started = time.perf_counter()
    tiles_ds = store.table(TILES).to_lance()  # pinned: tiles added meanwhile wait for the next run
    if tiles_ds.count_rows() == 0:
        raise EmbedstoreError("the store has no tiles; run `embedstore ingest` first")
    target = _Target.resolve(store, backbone_key, options)
    device = resolve_device(options.device)
    workers = default_workers(device) if options.workers is None else options.workers
    wanted = target.wanted
    report = EmbedReport(
        target.name,
        wanted.backbone,
        views=options.views,
        precision=wanted.precision,
        store_dtype=wanted.store_dtype,
        device=str(device),
        batch_size=options.batch_size,
        workers=workers,
    )
    tiles = pl.from_arrow(tiles_ds.to_table(columns=["tile_id", "pixel_format", "source_id"]))
    tiles = tiles.with_row_index("pos")
    present = present_rows(target.table)
    missing = embed_input.plan_missing(tiles.select("pos", "tile_id"), present, options.views, options.limit)
    report.tiles_total = tiles.height
    report.rows_present = present.join(tiles.select("tile_id"), on="tile_id", how="semi").height
    if missing.height == 0:
        report.seconds = time.perf_counter() - started
        return report
    target.record_augment(options.views)

    if device.type == "cpu" and options.reuse_memory:
        reuse_freed_memory()
    with torch_threads(options.threads):
        report.threads = torch.get_num_threads()
        size = target.backbone.spec.input_size
        forward = Forward(
            target.backbone.build(),
            device,
            wanted.precision,
            options.channels_last,
            options.compile,
            options.batch_size,
        )
        slots = embed_input.BatchSlots(workers, options.prefetch, options.batch_size, size)
        sources = _sources_without_pixels(store, tiles, missing)
        decoder = embed_input.DecodeTiles(slots, size, options.resize, wanted.augment, sources)
        writer = _ChunkWriter(
            store,
            target.name,
            embedding_schema(wanted),
            target.table,
            missing.height,
            options.on_chunk,
            options.chunk_rows,
        )
        pipeline_started = time.perf_counter()
        try:
            _run(forward, decoder, tiles_ds, missing, options, workers, device, writer, wanted.backbone)
        finally:
            writer.close()
            report.rows_written, report.tiles_embedded = writer.rows_written, writer.tiles_written
            report.table_version = writer.version
        report.pipeline_seconds = time.perf_counter() - pipeline_started
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _Target:
    """The backbone, its table (None until written) and the provenance this run would write."""

    backbone: Backbone
    name: str
    table: lancedb.table.Table | None
    recorded: Provenance | None
    wanted: Provenance

    @classmethod
    def resolve(cls, store: Store, key: str, options: EmbedOptions) -> _Target:
        """Find the table and refuse (before any work) a run whose vectors would not fit it."""
        backbone = _backbone(key, options.weights)
        name = table_name(backbone.spec.key)
        table = store.table(name) if name in store.table_names() else None
        recorded = recorded_provenance(table, name) if table is not None else None
        precision = options.precision or (recorded.precision if recorded else "fp32")
        store_dtype = options.store_dtype or (recorded.store_dtype if recorded else "float32")
        augment = options.augment if options.views else (recorded.augment if recorded else ())
        wanted = Provenance.for_backbone(backbone, options.resize, precision, store_dtype, augment)
        if recorded is not None:
            check_compatible(recorded, wanted, name, options.views)
        return cls(backbone, name, table, recorded, wanted)

    def record_augment(self, views: int) -> None:
        """The first run that adds views to an existing table records its augmentations there."""
        if self.table is None or not views or self.recorded.augment:
            return
        updated = dataclasses.replace(self.recorded, augment=self.wanted.augment)
        metadata = {k.decode(): v.decode() for k, v in updated.to_metadata().items()}
        self.table.to_lance().replace_schema_metadata(metadata)
        self.table.checkout_latest()


def _backbone(key: str, weights: str | Path | None) -> Backbone:
    from .backbones import get_backbone

    backbone = get_backbone(key, weights=weights)
    ok, why = backbone.available()
    if not ok:
        raise BackboneError(f"backbone {key!r} cannot run here: {why}")
    return backbone


def _sources_without_pixels(
    store: Store, tiles: pl.DataFrame, missing: pl.DataFrame
) -> dict[str, tuple[str, str]]:
    """(uri, kind) of the sources whose missing tiles have no stored pixels (usually none)."""
    needed = tiles.join(missing.select("pos").unique(), on="pos", how="semi").filter(
        pl.col("pixel_format").is_null()
    )
    ids = set(needed["source_id"].drop_nulls().to_list())
    if not ids:
        return {}
    rows = store.read(SOURCES, columns=["source_id", "uri", "kind"]).to_pylist()
    return {r["source_id"]: (r["uri"], r["kind"]) for r in rows if r["source_id"] in ids}


def _run(
    forward: Forward,
    decoder: embed_input.DecodeTiles,
    tiles_ds: Any,
    missing: pl.DataFrame,
    options: EmbedOptions,
    workers: int,
    device: torch.device,
    writer: _ChunkWriter,
    key: str,
) -> None:
    """The loop: batches of pixels in, finite vectors out, buffered into chunks for the writer."""
    reader = embed_input.TileReader(tiles_ds, missing, options.batch_size, decoder.slots.count)
    loader = embed_input.make_loader(reader, decoder, workers, options.prefetch, device.type == "cpu")
    unit = "view" if options.views else "tile"
    bar = tqdm(
        total=missing.height,
        desc=writer.name,
        unit=unit,
        disable=not options.progress,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    batches = embed_input.start(loader)
    try:
        for batch in batches:
            if batch.error is not None:
                raise EmbedstoreError(batch.error)
            vectors = forward(decoder.slots.pixels(batch))
            writer.add(batch.tile_ids, batch.views, _checked(vectors, batch, writer.store_dtype, key))
            bar.update(len(batch.tile_ids))
        writer.flush()
    finally:
        reader.close()
        embed_input.stop(batches)
        bar.close()


def _checked(vectors: torch.Tensor, batch: embed_input.PixelBatch, store_dtype: str, key: str) -> np.ndarray:
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


class _ChunkWriter:
    """Buffers rows and appends them in chunks of `chunk_rows`, one write in flight in a thread."""

    def __init__(
        self,
        store: Store,
        name: str,
        schema: pa.Schema,
        table: lancedb.table.Table | None,
        total: int,
        on_chunk: Callable[[EmbedProgress], None] | None,
        chunk_rows: int = 4096,
    ) -> None:
        self.store, self.name, self.schema, self.table = store, name, schema, table
        self.total, self.on_chunk = total, on_chunk
        self.chunk_rows = chunk_rows
        self.dim = schema.field("vector").type.list_size
        self.store_dtype = "float16" if schema.field("vector").type.value_type == pa.float16() else "float32"
        self.rows_written, self.version = 0, None
        self._tiles: set[str] = set()
        self._ids: list[str] = []
        self._views: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []
        self._buffered = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed-writer")
        self._pending: tuple[Future, int, list[str]] | None = None

    @property
    def tiles_written(self) -> int:
        return len(self._tiles)

    def add(self, tile_ids: list[str], views: np.ndarray, vectors: np.ndarray) -> None:
        self._ids += tile_ids
        self._views.append(views)
        self._vectors.append(vectors)
        self._buffered += len(tile_ids)
        if self._buffered >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered rows to the writer thread (after the previous write has finished)."""
        self._wait()
        if not self._buffered:
            return
        vectors = np.concatenate(self._vectors).reshape(-1)
        chunk = pa.table(
            [
                pa.array(self._ids, pa.string()),
                pa.array(np.concatenate(self._views), pa.int16()),
                pa.FixedSizeListArray.from_arrays(pa.array(vectors), self.dim),
            ],
            schema=self.schema,
        )
        self._pending = (self._pool.submit(self._append, chunk), chunk.num_rows, self._ids)
        self._ids, self._views, self._vectors, self._buffered = [], [], [], 0

    def close(self) -> None:
        """Wait for the write in flight (never leave half a run's bookkeeping behind), then stop."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def _wait(self) -> None:
        if self._pending is None:
            return
        future, rows, ids = self._pending
        self._pending = None
        future.result()
        self.rows_written += rows
        self._tiles.update(ids)
        if self.on_chunk is not None:
            self.on_chunk(EmbedProgress(self.name, self.rows_written, self.total))

    def _append(self, chunk: pa.Table) -> None:
        if self.table is None:
            self.table = self.store.db.create_table(self.name, data=chunk, schema=self.schema)
        else:
            self.table.add(chunk)
        self.version = int(self.table.version)


def check_backbones(keys: Iterable[str], weights: str | Path | None = None) -> None:
    """Fail fast, before any work, when one of several backbone keys is unknown or cannot run here."""
    for key in keys:
        _backbone(key, weights)
