"""What `embed` can be told, and what it reports. A leaf: importable without torch (for the CLI and plans)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.reports import JsonReport
from ..core.validation import (
    Flag,
    Function,
    Interval,
    NamesFrom,
    OneOf,
    PathValue,
    SqlExpression,
    invalid,
    option,
    validate,
)
from ..runtime.ray_cluster import address_option, check_engine_address, engine_option
from ..runtime.resources import DEVICES
from ..storage.embedding_tables import STORE_DTYPES

if TYPE_CHECKING:
    from ..storage.versions import TableUpkeep

PRECISIONS = ("fp32", "bf16", "fp16")
RESIZE_METHODS = ("bicubic", "bilinear")
DECODES = ("auto", "cpu", "device")
AUGMENTATIONS = ("flip", "rot90", "hed-jitter", "blur")
MAX_VIEWS = 2**15 - 1  # views are stored as int16


@dataclass
class EmbedProgress:
    """Handed to `on_chunk` after each chunk is durably written."""

    table: str
    rows_written: int  # by this run so far
    rows_total: int  # rows this run set out to write


@dataclass
class EmbedOptions:
    """How to embed. `precision` / `store_dtype` None: the table's own, or fp32 / float32 for a new table."""

    weights: Path | None = option(
        None,
        PathValue(),
        optional=True,
        help="Local weights file or timm model directory for the (single) backbone.",
    )
    batch_size: int | None = option(
        None,
        Interval(1, integer=True),
        optional=True,
        help="Tiles per forward pass [default: 256 on a GPU with 20 GiB or more, else 64].",
    )
    precision: str | None = option(
        None, OneOf(PRECISIONS), optional=True, help="Autocast precision [default: the table's, else fp32]."
    )
    compile: bool = option(False, Flag(), help="torch.compile the model (slow start, faster after).")
    device: str = option("auto", OneOf(DEVICES), help="Where the model runs; auto: CUDA when present.")
    channels_last: bool = option(True, Flag(), cli=False)
    store_dtype: str | None = option(
        None,
        OneOf(tuple(STORE_DTYPES)),
        optional=True,
        help="Stored vector type [default: the table's, else float32].",
    )
    views: int = option(
        0, Interval(0, MAX_VIEWS, integer=True), help="Augmented views per tile besides the tile."
    )
    augment: tuple[str, ...] = option(
        AUGMENTATIONS, NamesFrom(AUGMENTATIONS), help="Augmentations of the views, comma-separated."
    )
    workers: int | None = option(
        None,
        Interval(0, integer=True),
        optional=True,
        help="Decode processes; 0 decodes between batches [default: 0 on CPUs of up to 4 cores, "
        "1 per 8 cores above; with a GPU every core but one, up to 16, or 2 when the GPU decodes the "
        "tiles]. With --engine ray: Ray actors [default: one per GPU; "
        "on CPUs, the cluster's CPUs / --threads].",
    )
    threads: int | None = option(
        None,
        Interval(1, integer=True),
        optional=True,
        help="torch threads for the forward pass [default: torch's]. With --engine ray: per actor "
        "[default: 4, or the smallest node's CPUs when fewer].",
    )
    chunk_rows: int = option(4096, Interval(1, integer=True), cli=False)  # rows per commit, at least
    # False: every commit holds chunk_rows rows (runs that count their commits: kill tests, benchmarks)
    commits_by_rate: bool = option(True, Flag(), cli=False)
    prefetch: int = option(4, Interval(1, integer=True), cli=False)  # batches each worker decodes ahead
    decode: str = option(
        "auto",
        OneOf(DECODES),
        help="Where stored JPEG tiles are decoded: device (torchvision, nvJPEG on CUDA), cpu (decode "
        "workers), auto (device on CUDA). PNG, views and re-read tiles always decode on CPU.",
    )
    resize: str = option("bicubic", OneOf(RESIZE_METHODS), cli=False)  # antialiased, to the input size
    reuse_memory: bool = option(True, Flag(), cli=False)  # on CPU, keep freed memory (embedstore.runtime)
    progress: bool = option(True, Flag(), help="Show a progress bar.")
    limit: int | None = option(
        None, Interval(0, integer=True), optional=True, help="Embed at most this many tiles."
    )
    where: str | None = option(
        None,
        SqlExpression(),
        optional=True,
        help="Embed only the tiles this SQL expression over tile columns matches, e.g. \"dataset = 'pcam'\" "
        "[default: every tile]; later runs add the others.",
    )
    timeline: Path | None = option(
        None,
        PathValue(output=True),
        optional=True,
        help="Record where the run's time went (read, decode, forward, GPU, write) and save it as "
        "FILE.png and FILE.json.",
    )
    on_chunk: Callable[[EmbedProgress], None] | None = option(None, Function(), optional=True, cli=False)
    compact: bool = option(
        True,
        Flag(),
        help="After the run, merge the table's fragments when more than 64 are small, and prune its "
        "untagged versions older than the store's version_retention (`embedstore config`).",
    )
    engine: str = engine_option("Ray Data actors")
    address: str | None = address_option()

    def __post_init__(self) -> None:
        validate(self)

    def check_relations(self) -> None:
        if self.views and not self.augment:
            raise invalid("--augment", "", "at least one operation when --views is above 0")
        check_engine_address(self.engine, self.address)
        if self.engine == "ray" and (self.on_chunk is not None or self.compile or self.timeline):
            raise invalid(
                "--engine", "ray", "used without on_chunk, --compile and --timeline (local engine only)"
            )
        if self.engine == "ray" and self.decode == "device":
            raise invalid("--decode", "device", "cpu or auto with --engine ray (local engine only)")


@dataclass
class EmbedReport(JsonReport):
    table: str
    backbone: str
    rows_written: int = 0
    tiles_embedded: int = 0  # distinct tiles this run computed (and wrote, unless another run had)
    rows_present: int = 0  # rows the table already had for current tiles
    rows_written_elsewhere: int = 0  # rows this run computed that another process had written meanwhile
    tiles_total: int = 0  # tiles in the store
    where: str | None = None  # the --where this run was restricted to
    tiles_matched: int | None = None  # tiles --where matched (None without --where)
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
    engine: str = "local"  # ray: `workers` Ray actors, `threads` torch threads each
    commits: int = 0  # commits of this run's vectors (local engine)
    writer_stalled_seconds: float = 0.0  # time the model waited for a commit to finish (local engine)
    compaction: list[TableUpkeep] = field(default_factory=list)  # the automatic compaction after the run
    notes: list[str] = field(default_factory=list)

    @property
    def tiles_per_s(self) -> float:
        return self.tiles_embedded / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    def scope(self) -> str:
        """The table's name, with the tiles --where matched when the run had one."""
        if self.where is None:
            return self.table
        return f"{self.table} (--where {self.where!r}: {self.tiles_matched} of {self.tiles_total} tiles)"

    def summary(self) -> str:
        if self.rows_written == 0 and self.rows_written_elsewhere == 0:
            tiles = self.tiles_total if self.tiles_matched is None else self.tiles_matched
            line = f"{self.scope()}: up to date ({self.rows_present} rows for {tiles} tiles)"
        else:
            per_tile = f" x {self.views + 1} views" if self.views else ""
            per_tile += " computed" if self.rows_written_elsewhere else ""
            decode = f"{self.workers} decode worker(s)" if self.workers else "decoding inline"
            if self.engine == "ray":
                decode = f"{self.workers} Ray actor(s)"
            line = (
                f"{self.scope()}: {self.rows_written} rows written ({self.tiles_embedded} tiles{per_tile}), "
                f"{self.rows_present} already present; {self.seconds:.1f} s, {self.tiles_per_s:.1f} tiles/s "
                f"({self.precision}, {self.device}, batch {self.batch_size}, {decode}, "
                f"{self.threads} torch thread(s){' each' if self.engine == 'ray' else ''}, "
                f"stored as {self.store_dtype})"
            )
        notes = list(self.notes)
        notes += [f"compaction: {done.line()}" for done in self.compaction if done.worth_saying]
        if self.rows_written_elsewhere:
            notes.append(
                f"{self.rows_written_elsewhere} row(s) were written by another process at the same time "
                "and kept once"
            )
        return "\n".join([line, *(f"note: {note}" for note in notes)])

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "tiles_per_s": self.tiles_per_s, "rows_per_s": self.rows_per_s}
