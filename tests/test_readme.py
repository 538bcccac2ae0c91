"""The README's Python snippets run top to bottom, as a user would paste them one after another, on a
small copy of the built-in PCam sample (`pcam/`: normal and tumor folders)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from embedstore.samples import pcam_sample

README = Path(__file__).resolve().parents[1] / "README.md"
TILES_PER_CLASS = 60  # enough for 5 folds and 16-shot probes, small enough to embed in seconds


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_the_readme_has_python_snippets():
    assert len(python_blocks(README.read_text())) >= 4


def test_the_readme_python_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for label in ("normal", "tumor"):
        folder = tmp_path / "pcam" / label
        folder.mkdir(parents=True)
        for image in sorted((pcam_sample() / label).glob("*.jpg"))[:TILES_PER_CLASS]:
            shutil.copy(image, folder)
    assert len(list((tmp_path / "pcam").rglob("*.jpg"))) == 2 * TILES_PER_CLASS
    namespace: dict = {"__name__": "readme"}
    for number, block in enumerate(python_blocks(README.read_text()), start=1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
    store = namespace["store"]
    assert store.catalog.count("tiles") == 2 * TILES_PER_CLASS
    assert namespace["X"].shape == (2 * TILES_PER_CLASS, 1280)
    assert set(namespace["report"].ranking["backbone"]) >= {"tf_efficientnet_lite0.in1k", "resnet18.random"}
    assert namespace["result"].validation["auroc"] > 0.7  # the head of the last block, on held-out tiles
    assert namespace["scores"].metrics["auroc"].value > 0.7
    assert len(namespace["best"].trials) == 8  # heads.tune(..., 8, ...): every configuration tried
