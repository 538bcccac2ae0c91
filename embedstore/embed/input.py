"""The input side of `embed`: which (tile, view) rows are missing, and batches of pixels for them.

Lance is read only in the main process (a reader thread `take`s encoded tiles ahead of time); the encoded
bytes travel to DataLoader workers as the "index" of each batch, and the workers decode, augment and
resize them into a ring of shared uint8 buffers that the model reads as (B, 3, S, S) channels_last.
Workers never touch Lance, so forking them is safe. With device decoding (`DeviceJpeg`), batches of stored
JPEG tiles skip the workers' decoding: their bytes come back and torchvision decodes them where the model
runs (nvJPEG on CUDA).
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from ..core.errors import EmbedstoreError
from ..runtime.resources import trim
from ..sources.codecs import encode_tile, sniff_format
from ..sources.tile_pixels import TILE_COLUMNS, TilePixels
from .augment import augment_view
from .options import DECODES, RESIZE_METHODS
from .timeline import Timeline

if TYPE_CHECKING:  # polars is imported where plans are made, so decoding needs none of it
    import polars as pl

READ_ROWS = 1024  # rows fetched from Lance per `take`
READ_AHEAD = 8  # batches the reader thread keeps ready


def plan_missing(tiles: pl.DataFrame, present: pl.DataFrame, views: int, limit: int | None) -> pl.DataFrame:
    """(pos, tile_id, view) rows to embed, in table order; `tiles` has (pos, tile_id).

    `limit` caps the number of tiles (not rows) taken from the missing ones.
    """
    import polars as pl

    wanted = tiles.join(pl.DataFrame({"view": pl.Series(range(views + 1), dtype=pl.Int16)}), how="cross")
    missing = wanted.join(present, on=["tile_id", "view"], how="anti").sort(["pos", "view"])
    if limit is not None:
        keep = missing.select(pl.col("pos").unique(maintain_order=True).head(limit))
        missing = missing.join(keep, on="pos", how="semi")
    return missing


@dataclass
class Payload:
    """One batch to decode: the distinct tiles it needs, per row (index into tiles, view), and its slot."""

    tiles: list[dict[str, Any]]
    rows: list[tuple[int, int]]
    slot: int = 0


@dataclass
class PixelBatch:
    """What a worker hands back: the rows' ids and views; their pixels wait in `BatchSlots` slot `slot`."""

    tile_ids: list[str]
    views: np.ndarray  # int16 (B,)
    slot: int
    error: str | None = None
    encoded: list[bytes] | None = None  # stored JPEG bytes left for `DeviceJpeg`; the slot is then unused
    decoded: tuple[float, float, int] | None = None  # perf_counter start, end and worker of the decoding


class BatchSlots:
    """A ring of uint8 batch buffers (slots, B, S, S, 3), in shared memory made before workers start.

    Workers decode straight into a slot and send only its number, so no batch is copied between
    processes and no shared memory is created per batch. A slot is reused `count` batches later. The
    DataLoader never has more than workers x prefetch batches in flight, and the pipeline keeps one more
    on the GPU (its transfer may still read the slot), so `count` exceeds both; decoding inline needs two.
    On CUDA, `pin` page-locks the ring so that batches go to the GPU by DMA straight from their slot.
    """

    def __init__(self, workers: int, prefetch: int, batch_size: int, size: int) -> None:
        self.count = workers * prefetch + 3 if workers else 2
        self.buffer = torch.empty((self.count, batch_size, size, size, 3), dtype=torch.uint8)
        if workers:
            self.buffer.share_memory_()
        self.pinned = False

    def pixels(self, batch: PixelBatch) -> torch.Tensor:
        """The batch's pixels (B, 3, S, S), a channels_last view of its slot."""
        return self.buffer[batch.slot, : len(batch.tile_ids)].permute(0, 3, 1, 2)

    def pin(self, device: torch.device) -> bool:
        """Page-lock the ring for DMA to `device` (CUDA only; shared memory stays shared). Returns
        whether it is pinned: when the driver refuses, batches are staged through pinned buffers."""
        if device.type != "cuda" or self.pinned:
            return self.pinned
        nbytes = self.buffer.numel() * self.buffer.element_size()
        code = int(torch.cuda.cudart().cudaHostRegister(self.buffer.data_ptr(), nbytes, 0))
        self.pinned = code == 0
        return self.pinned

    def unpin(self) -> None:
        if self.pinned:
            torch.cuda.synchronize()
            torch.cuda.cudart().cudaHostUnregister(self.buffer.data_ptr())
            self.pinned = False


class ArrowTiles:
    """Tiles held in a pyarrow table, read as TileReader reads a Lance dataset (`take`): for benchmarks
    and tests that run the pipeline without a store."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def take(self, index: np.ndarray, columns: list[str]) -> Any:
        import pyarrow as pa

        return self.table.select(columns).take(pa.array(index))


class TileReader(Sampler):
    """Yields one Payload per batch, read from a pinned Lance dataset by a background thread."""

    def __init__(
        self,
        dataset: Any,
        missing: pl.DataFrame,
        batch_size: int,
        slots: int,
        timeline: Timeline | None = None,
    ) -> None:
        self.dataset, self.slots, self.timeline = dataset, slots, timeline
        self.pos = missing["pos"].to_numpy()
        self.views = missing["view"].to_numpy()
        self.batch_size = batch_size
        self._stop = threading.Event()

    def __len__(self) -> int:
        return -(-len(self.pos) // self.batch_size)

    def __iter__(self) -> Iterator[Payload]:
        ready: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        thread = threading.Thread(target=self._read, args=(ready,), name="embed-reader", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()

    def close(self) -> None:
        self._stop.set()

    def _put(self, ready: queue.Queue, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, ready: queue.Queue) -> None:
        try:
            per_read = max(1, READ_ROWS // self.batch_size) * self.batch_size
            for start in range(0, len(self.pos), per_read):
                pos = self.pos[start : start + per_read]
                views = self.views[start : start + per_read]
                started = time.perf_counter()
                unique, inverse = np.unique(pos, return_inverse=True)
                rows = self.dataset.take(unique, columns=TILE_COLUMNS).to_pylist()
                if self.timeline is not None:
                    self.timeline.add("read", started, time.perf_counter(), len(pos))
                for b in range(0, len(pos), self.batch_size):
                    payload = make_payload(
                        rows, inverse[b : b + self.batch_size], views[b : b + self.batch_size]
                    )
                    payload.slot = (start + b) // self.batch_size % self.slots
                    if not self._put(ready, payload):
                        return
            self._put(ready, None)
        except BaseException as error:  # handed to the main thread, which raises it
            self._put(ready, error)


def make_payload(rows: list[dict[str, Any]], index: np.ndarray, views: np.ndarray) -> Payload:
    """The Payload of the rows at `index` of `rows` (tile dicts) with their `views`."""
    distinct, local = np.unique(index, return_inverse=True)
    return Payload([rows[i] for i in distinct], list(zip(local.tolist(), views.tolist(), strict=True)))


class DecodeTiles(Dataset):
    """Payload -> PixelBatch: decode (or re-read), augment views >= 1, resize into the payload's slot.

    Resizing uses torch's antialiased uint8 kernels, which match Pillow's (bicubic within 2 levels, mostly
    exactly; bilinear exactly) at a sixth of the cost.
    """

    def __init__(
        self,
        slots: BatchSlots,
        size: int,
        resize: str,
        augment: tuple[str, ...],
        sources: dict[str, tuple[str, str]],
        jpeg: DeviceJpeg | None = None,
    ) -> None:
        if resize not in RESIZE_METHODS:
            raise EmbedstoreError(f"unknown resize {resize!r}; use one of {', '.join(RESIZE_METHODS)}")
        self.slots, self.size, self.mode, self.augment = slots, size, resize, augment
        self.sources = sources
        self.jpeg = jpeg
        self._pixels: TilePixels | None = None

    def pixels(self, batch: PixelBatch) -> torch.Tensor:
        """The batch's pixels (B, 3, S, S): decoded on the device, or the view of its slot."""
        if batch.encoded is not None and self.jpeg is not None:
            return self.jpeg(batch.encoded)
        return self.slots.pixels(batch)

    def __getitem__(self, payload: Payload) -> PixelBatch:
        started = time.perf_counter()
        batch = self._decode(payload)
        worker = get_worker_info()
        batch.decoded = (started, time.perf_counter(), -1 if worker is None else worker.id)
        return batch

    def _decode(self, payload: Payload) -> PixelBatch:
        if self._pixels is None:
            self._pixels = TilePixels(self.sources)
        tiles = [payload.tiles[t] for t, _ in payload.rows]
        tile_ids = [tile["tile_id"] for tile in tiles]
        views = np.array([view for _, view in payload.rows], dtype=np.int16)
        if self.jpeg is not None and not views.any() and all(_stored_jpeg(tile) for tile in tiles):
            return PixelBatch(tile_ids, views, payload.slot, encoded=[tile["pixels"] for tile in tiles])
        try:
            images = [
                augment_view(self._pixels.rgb(tile), tile["tile_id"], int(view), self.augment)
                for tile, view in zip(tiles, views, strict=True)
            ]
        except EmbedstoreError as error:
            return PixelBatch(tile_ids, views, payload.slot, str(error))
        fill_batch(self.slots.buffer[payload.slot], images, self.size, self.mode)
        return PixelBatch(tile_ids, views, payload.slot)


def _stored_jpeg(tile: dict[str, Any]) -> bool:
    return tile["pixels"] is not None and sniff_format(tile["pixels"]) == "jpeg"


def resize_uint8(batch: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> (B, 3, S, S), antialiased; unchanged when already S x S.

    On CPU torch's uint8 kernel; elsewhere (no uint8 kernel) `resize_two_pass`.
    """
    if tuple(batch.shape[-2:]) == (size, size):
        return batch
    if batch.device.type == "cpu":
        return F.interpolate(batch, size=(size, size), mode=mode, antialias=True, align_corners=False)
    return resize_two_pass(batch, size, mode)


def resize_two_pass(batch: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """The uint8 kernel's resize in float32: width, then height, rounded to uint8 after each pass.

    Rounding and clamping between the passes, as Pillow and torch's uint8 kernel do, matters: one float
    pass lets bicubic overshoot through (up to 20 levels off); this way pixels differ by at most 2 levels.
    """
    wide = F.interpolate(
        batch.float(), size=(batch.shape[-2], size), mode=mode, antialias=True, align_corners=False
    )
    wide = wide.round_().clamp_(0, 255)
    out = F.interpolate(wide, size=(size, size), mode=mode, antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def fill_batch(target: torch.Tensor, images: list[np.ndarray], size: int, mode: str) -> None:
    """Write images (H, W, 3) into target (B, S, S, 3), resizing each group of one shape at once."""
    shapes: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        shapes.setdefault(image.shape, []).append(i)
    for rows in shapes.values():
        batch = torch.from_numpy(np.stack([images[i] for i in rows]))
        batch = resize_uint8(batch.permute(0, 3, 1, 2), size, mode).permute(0, 2, 3, 1)
        if len(rows) == len(images) and rows[-1] == len(rows) - 1:
            target[: len(rows)] = batch
        else:
            target[torch.tensor(rows)] = batch


class DeviceJpeg:
    """Stored JPEG bytes -> uint8 (B, 3, S, S) channels_last on `device`.

    torchvision decodes the batch there (nvJPEG on CUDA, libjpeg on CPU), then the same antialiased resize
    as the CPU path runs on the device; the backbone normalises (mean / std) where its input is.
    """

    def __init__(self, device: torch.device, size: int, resize: str) -> None:
        self.device, self.size, self.mode = device, size, resize

    def __call__(self, encoded: list[bytes]) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(item), dtype=torch.uint8) for item in encoded]
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.uint8, device=self.device)
        out = out.contiguous(memory_format=torch.channels_last)
        shapes: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            shapes.setdefault(tuple(image.shape), []).append(i)
        for rows in shapes.values():
            index = torch.tensor(rows, device=self.device)
            out[index] = resize_uint8(torch.stack([images[i] for i in rows]), self.size, self.mode)
        return out


def device_jpeg(decode: str, device: torch.device, size: int, resize: str) -> DeviceJpeg | None:
    """The device decoder `decode` ("auto", "cpu", "device") asks for on `device`, or None for CPU workers.

    auto: on CUDA when torchvision can decode JPEG there. device: here, whatever the device (on CPU,
    torchvision decodes on the CPU); EmbedstoreError when torchvision cannot.
    """
    if decode not in DECODES:
        raise EmbedstoreError(f"unknown decode {decode!r}; use one of {', '.join(DECODES)}")
    if decode == "cpu" or (decode == "auto" and device.type != "cuda"):
        return None
    jpeg = DeviceJpeg(device, size, resize)
    try:
        jpeg([encode_tile(np.zeros((8, 8, 3), dtype=np.uint8), "jpeg")])
    except Exception as error:  # ImportError, or RuntimeError from a build without this device's decoder
        if decode == "auto":
            return None
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise EmbedstoreError(
            f"--decode device: torchvision cannot decode JPEG on {device.type} ({reason}); use --decode cpu"
        ) from None
    return jpeg


def _keep(batch: PixelBatch) -> PixelBatch:
    return batch


def _worker_init(_: int) -> None:
    """A decode worker feeding a GPU: one torch thread."""
    torch.set_num_threads(1)


def _idle_worker_init(_: int) -> None:
    """A decode worker beside a CPU model: one thread, scheduled only when a CPU would otherwise idle.

    The model's threads use every core; a worker that preempts one of them stalls the others at the next
    barrier, so its decoding would count double. SCHED_IDLE (Linux) makes it fill gaps instead.
    """
    torch.set_num_threads(1)
    try:
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.nice(10)
    except OSError:
        pass


def make_loader(
    reader: TileReader, decoder: DecodeTiles, workers: int, prefetch: int, beside_cpu_model: bool
) -> DataLoader:
    """A DataLoader whose sampler yields payloads and whose workers (or, with 0, this thread) decode them."""
    extra: dict[str, Any] = {}
    if workers > 0:
        method = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else "spawn"
        init = _idle_worker_init if beside_cpu_model else _worker_init
        extra = {"multiprocessing_context": method, "prefetch_factor": prefetch, "worker_init_fn": init}
    return DataLoader(
        decoder,
        batch_size=None,
        sampler=reader,
        num_workers=workers,
        collate_fn=_keep,  # type: ignore[arg-type]  # batch_size=None: items, not lists (the stub's case)
        **extra,
    )


def start(loader: DataLoader) -> Iterator[PixelBatch]:
    """Start the loader's workers, without Lance's at-fork warning (the workers never use Lance).

    Free heap memory is trimmed first so that the forked workers share as little as possible with this
    process copy-on-write (see embedstore.runtime).
    """
    if loader.num_workers > 0:
        trim()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return iter(loader)


def stop(iterator: Iterator[PixelBatch]) -> None:
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
