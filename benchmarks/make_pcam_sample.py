"""Make the built-in PCam sample: 200 + 200 labelled tiles shipped in embedstore/samples/pcam.

Reads ../shared/data/pcam (relative to the repository root; see that folder's README), picks 200 tiles
from `train/0` (-> normal/) and 200 from `train/1` (-> tumor/) at random with numpy's default_rng(SEED),
and copies their JPEG bytes unchanged, keeping the file names. Should the copies exceed MAX_BYTES, they
are re-encoded (quality REENCODE_QUALITY) instead. Prints the sample's size; exits 2 when the data is
absent. SOURCE.md and LICENSE beside the sample are written by hand, not by this script.

--smoke: the same on a generated PCam folder (harness.fake_pcam), 4 tiles a class, into a temporary
folder; --out is then the JSON summary (counts, bytes, how) instead of the sample folder.
"""

from __future__ import annotations

import argparse
import io
import shutil
from collections.abc import Sequence
from pathlib import Path

import harness
import numpy as np

DATA = harness.DATA / "pcam"
OUT = harness.ROOT / "embedstore" / "samples" / "pcam"

SEED = 0
PER_CLASS = 200
CLASSES = (("0", "normal"), ("1", "tumor"))  # PCam label -> class folder (1 = metastatic tumour)
MAX_BYTES = 2 * 1024 * 1024
REENCODE_QUALITY = 85


def choose(data: Path, seed: int = SEED, per_class: int = PER_CLASS) -> dict[str, list[Path]]:
    """Class folder name -> the chosen files of train/<label>, in name order."""
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[Path]] = {}
    for label, name in CLASSES:
        files = sorted((data / "train" / label).glob("*.jpg"))
        if len(files) < per_class:
            raise SystemExit(f"error: {data / 'train' / label} has {len(files)} JPEGs, need {per_class}")
        picks = rng.choice(len(files), size=per_class, replace=False)
        chosen[name] = sorted(files[i] for i in picks)
    return chosen


def reencode(path: Path, quality: int) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--data", type=Path, default=DATA, help="the PCam folder (with train/0, train/1)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the sample goes (--smoke: the JSON)")
    args = parser.parse_args(argv)
    if args.smoke:
        with harness.scratch("pcam-sample-") as tmp:
            summary = make(harness.fake_pcam(tmp, 6), tmp / "sample", per_class=4)
        harness.write_json(args.out, {"machine": harness.machine(), "smoke": True, **summary})
        return 0
    if not (args.data / "train" / "0").is_dir() or not (args.data / "train" / "1").is_dir():
        return harness.missing_data(args.data, "the PCam tiles (train/0 and train/1)")
    make(args.data, args.out)
    return 0


def make(data: Path, out: Path, per_class: int = PER_CLASS) -> dict:
    """Write the sample from `data` into `out`; print and return what was written."""
    chosen = choose(data, per_class=per_class)
    total = sum(p.stat().st_size for files in chosen.values() for p in files)
    keep_bytes = total <= MAX_BYTES
    for name, files in chosen.items():
        folder = out / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for path in files:
            if keep_bytes:
                shutil.copyfile(path, folder / path.name)
            else:
                (folder / path.name).write_bytes(reencode(path, REENCODE_QUALITY))
    written = sum(p.stat().st_size for p in out.glob("*/*.jpg"))
    how = "original JPEG bytes" if keep_bytes else f"re-encoded at quality {REENCODE_QUALITY}"
    counts = ", ".join(f"{len(files)} {name}" for name, files in chosen.items())
    print(f"wrote {counts} to {out} ({how}; {written / 1024 / 1024:.2f} MiB, seed {SEED})")
    return {"counts": {name: len(files) for name, files in chosen.items()}, "bytes": written, "how": how}


if __name__ == "__main__":
    raise SystemExit(main())
