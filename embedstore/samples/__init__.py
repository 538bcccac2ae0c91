"""Small real data shipped inside the package, for examples, tests and first experiments.

`PCAM_SAMPLE` is 400 labelled PatchCamelyon tiles (CC0 1.0; see `pcam/SOURCE.md`): 96x96 RGB JPEG at
~0.97 µm/px in an ImageFolder, `normal/` (200) and `tumor/` (200; metastatic tumour in the central 32x32
px). Ingest it as an image folder with a task and the µm/px:

    import embedstore
    from embedstore.samples import PCAM_SAMPLE_MPP, pcam_sample
    store = embedstore.init("mystore")
    store.ingest([pcam_sample()], task="pcam", mpp=PCAM_SAMPLE_MPP)

Imports nothing heavy: only pathlib and embedstore.core.errors.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import EmbedstoreError

PCAM_SAMPLE: Path = Path(__file__).resolve().parent / "pcam"
PCAM_SAMPLE_MPP: float = 0.97  # µm/px of the PCam tiles (10x)
PCAM_POSITIVE: str = "tumor"  # the class folder of the positive class

__all__ = ["PCAM_SAMPLE", "PCAM_SAMPLE_MPP", "PCAM_POSITIVE", "pcam_sample"]


def pcam_sample() -> Path:
    """The PCam sample folder (normal/, tumor/); EmbedstoreError when the install lacks it."""
    if not (PCAM_SAMPLE / "normal").is_dir() or not (PCAM_SAMPLE / PCAM_POSITIVE).is_dir():
        raise EmbedstoreError(
            f"{PCAM_SAMPLE}: the built-in PCam sample is missing (broken install); reinstall embedstore"
        )
    return PCAM_SAMPLE
