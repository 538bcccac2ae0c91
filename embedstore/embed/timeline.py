"""Where an embed run's time went: spans of reading, decoding, forward passes and commits, per lane.

Each stage records (lane, start, end) in `time.perf_counter` seconds, which on Linux is the system-wide
monotonic clock, so spans from decode worker processes line up with the main process's. On CUDA the
"device" lane holds when the GPU really worked on each batch (from CUDA events), so its gaps are the idle
GPU that users see in `nvidia-smi`. `save` writes the spans as JSON and draws them as a PNG.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LANE_ORDER = ("read", "decode", "wait", "forward", "device", "collect", "write")
LANE_COLOURS = {
    "read": (86, 180, 233),
    "decode": (0, 158, 115),
    "wait": (213, 94, 0),
    "forward": (0, 114, 178),
    "device": (204, 121, 167),
    "collect": (240, 228, 66),
    "write": (117, 112, 179),
}
LANE_MEANING = {
    "read": "tiles read from the table (reader thread)",
    "decode": "tiles decoded and resized (per worker; on the device when decoded there)",
    "wait": "main thread waiting for a decoded batch (the model starves)",
    "forward": "batch handed to the model (on a GPU the launch; on a CPU the whole forward pass)",
    "device": "GPU busy with the batch: transfer, forward, features back",
    "collect": "main thread waiting for a batch's features",
    "write": "commit of a chunk of vectors (writer thread)",
}


@dataclass
class Span:
    lane: str  # a LANE_ORDER name, or "decode w<N>" for decode worker N
    start: float  # seconds since the timeline began
    end: float
    rows: int = 0


class Timeline:
    """Spans recorded by the pipeline's threads and workers; thread-safe."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.spans: list[Span] = []
        self._lock = threading.Lock()

    def add(self, lane: str, start: float, end: float, rows: int = 0) -> None:
        """A span given in absolute perf_counter seconds."""
        with self._lock:
            self.spans.append(Span(lane, start - self.origin, end - self.origin, rows))

    @contextlib.contextmanager
    def span(self, lane: str, rows: int = 0) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(lane, start, time.perf_counter(), rows)

    def busy(self) -> dict[str, float]:
        """Seconds each stage (decode workers together) was busy, overlaps within a lane counted once."""
        lanes: dict[str, list[tuple[float, float]]] = {}
        for span in self.spans:
            lanes.setdefault(span.lane, []).append((span.start, span.end))
        totals: dict[str, float] = {}
        for lane, spans in lanes.items():
            stage = stage_of(lane)
            totals[stage] = totals.get(stage, 0.0) + _union_length(spans)
        return totals

    def wall(self) -> float:
        return max((span.end for span in self.spans), default=0.0) - min(
            (span.start for span in self.spans), default=0.0
        )

    def summary(self) -> str:
        """One line: wall seconds and each stage's busy share of it."""
        wall = self.wall()
        if wall <= 0:
            return "timeline: nothing recorded"
        busy = self.busy()
        parts = [f"{stage} {busy[stage] / wall:.0%}" for stage in _ordered(busy)]
        return f"timeline over {wall:.2f} s, busy: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall(),
            "busy_s": self.busy(),
            "lanes": LANE_MEANING,
            "spans": [asdict(span) for span in self.spans],
        }

    def save(self, path: Path) -> tuple[Path, Path]:
        """Write `path` with .json and .png suffixes; returns both paths."""
        json_path, png_path = path.with_suffix(".json"), path.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.to_dict(), indent=1))
        draw(self, png_path)
        return json_path, png_path


def stage_of(lane: str) -> str:
    return lane.split(" ")[0]


def _ordered(names: Any) -> list[str]:
    order = {lane: i for i, lane in enumerate(LANE_ORDER)}
    return sorted(names, key=lambda name: (order.get(stage_of(name), len(order)), name))


def _union_length(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def draw(timeline: Timeline, path: Path, width: int = 1400) -> None:
    """A Gantt chart of the spans: one row per lane, time left to right, busy shares in the labels."""
    from PIL import Image, ImageDraw

    lanes = _ordered({span.lane for span in timeline.spans})
    row, label_w, top, bottom = 26, 270, 34, 30
    height = top + row * max(1, len(lanes)) + bottom
    image = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(image)
    start = min((span.start for span in timeline.spans), default=0.0)
    wall = max(timeline.wall(), 1e-9)
    plot_w = width - label_w - 20
    pen.text((10, 8), timeline.summary(), fill="black")
    lane_spans: dict[str, list[Span]] = {}
    for span in timeline.spans:
        lane_spans.setdefault(span.lane, []).append(span)
    for i, lane in enumerate(lanes):
        y = top + i * row
        busy = _union_length([(s.start, s.end) for s in lane_spans[lane]])
        pen.text((10, y + 7), f"{lane}  ({busy / wall:.0%} busy)", fill="black")
        pen.rectangle([label_w, y + 3, label_w + plot_w, y + row - 3], fill=(245, 245, 245))
        colour = LANE_COLOURS.get(stage_of(lane), (120, 120, 120))
        for span in lane_spans[lane]:
            x0 = label_w + (span.start - start) / wall * plot_w
            x1 = max(x0 + 1, label_w + (span.end - start) / wall * plot_w)
            pen.rectangle([x0, y + 4, x1, y + row - 4], fill=colour)
    axis_y = top + row * len(lanes) + 6
    for k in range(6):
        x = label_w + k * plot_w / 5
        pen.line([x, axis_y, x, axis_y + 4], fill="black")
        pen.text((x - 12, axis_y + 6), f"{k * wall / 5:.2f} s", fill="black")
    image.save(path)
