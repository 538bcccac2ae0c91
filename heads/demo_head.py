"""The heads part of `embedstore demo`: train a head on the built-in PCam sample, predict every tile of the
store, and draw its scores over the demo's H&E slide (heatmap PNG and QuPath GeoJSON)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedstore import Store
from embedstore.core.reports import JsonReport
from embedstore.demo import DEMO_BACKBONE, SAMPLE_TASK, local_folder

from .prediction import PredictReport, predict
from .spatial import export_geojson, heatmap
from .training import TrainResult, train

DEMO_HEAD = "pcam-tumour"
DEMO_AUGMENT = "noise:0.1,mixup:0.4"  # the sample is balanced: no smote; 400 tiles: mild augmentation
SLIDE_PREFERENCE = ("cmu_small_region.svs", "skimage_ihc.png")  # the H&E slide when it was fetched


@dataclass
class DemoHead(JsonReport):
    trained: TrainResult
    predicted: PredictReport
    slide: str | None
    heatmap: Path | None
    geojson: Path | None

    def summary(self) -> str:
        lines = [self.trained.summary(), self.predicted.summary()]
        if self.heatmap is not None:
            lines.append(
                f"heatmap of p(tumor) over {self.slide}: {self.heatmap} (GeoJSON for QuPath: {self.geojson})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "head": self.trained.card.to_dict(),
            "predicted": {"new": self.predicted.new_rows, "total": self.predicted.total_rows},
            "slide": self.slide,
            "heatmap": None if self.heatmap is None else str(self.heatmap),
            "geojson": None if self.geojson is None else str(self.geojson),
        }


def demo_head(store: Store, progress: bool = True, say: Callable[[str], None] = print) -> DemoHead:
    """Train an MLP head on the sample's tumour labels (retrained on every run: a few seconds), predict
    every embedded tile, and draw it on the first slide of SLIDE_PREFERENCE the store holds."""
    say(f"training an MLP head {DEMO_HEAD!r} on task {SAMPLE_TASK!r} with augmentation {DEMO_AUGMENT}")
    trained = train(
        store,
        DEMO_BACKBONE,
        SAMPLE_TASK,
        name=DEMO_HEAD,
        head="mlp",
        augment=DEMO_AUGMENT,
        overwrite=True,
        progress=progress,
    )
    say(f"predicting every tile with {DEMO_HEAD!r}")
    predicted = predict(store, DEMO_HEAD, progress=progress)
    slides = set(store.catalog.read("tiles", columns=["slide"]).column("slide").drop_null().to_pylist())
    slide = next((s for s in SLIDE_PREFERENCE if s in slides), None)
    if slide is None:
        return DemoHead(trained, predicted, None, None, None)
    say(f"drawing the head's scores over {slide}")
    stem = Path(slide).stem
    folder = local_folder(store)
    drawn = heatmap(store, DEMO_HEAD, slide, folder / f"heatmap-{stem}.png")
    geojson = export_geojson(store, DEMO_HEAD, slide, folder / f"heatmap-{stem}.geojson")
    return DemoHead(trained, predicted, slide, drawn, geojson)
