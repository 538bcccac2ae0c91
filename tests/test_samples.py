"""The built-in PCam sample: 200 + 200 real labelled tiles that ingest as an image folder."""

from __future__ import annotations

from collections import Counter

import pytest
from PIL import Image

import embedstore
from embedstore import EmbedstoreError, IngestOptions
from embedstore.samples import PCAM_POSITIVE, PCAM_SAMPLE, PCAM_SAMPLE_MPP, pcam_sample


def test_sample_files():
    assert pcam_sample() == PCAM_SAMPLE
    assert (PCAM_SAMPLE / "SOURCE.md").is_file() and (PCAM_SAMPLE / "LICENSE").is_file()
    for name in ("normal", PCAM_POSITIVE):
        files = sorted((PCAM_SAMPLE / name).glob("*.jpg"))
        assert len(files) == 200
        for path in files:
            with Image.open(path) as image:
                assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (96, 96))


def test_missing_sample_is_an_embedstore_error(monkeypatch, tmp_path):
    import embedstore.samples as samples

    monkeypatch.setattr(samples, "PCAM_SAMPLE", tmp_path / "gone")
    with pytest.raises(EmbedstoreError, match="PCam sample is missing"):
        samples.pcam_sample()


def test_sample_ingests_with_labels(tmp_path):
    store = embedstore.init(tmp_path / "s")
    options = IngestOptions(kind="imagefolder", task="pcam", mpp=PCAM_SAMPLE_MPP, progress=False, workers=2)
    report = store.ingest([PCAM_SAMPLE], options)
    assert (report.sources_failed, report.tiles_added, report.labels_written) == (0, 400, 400)
    assert store.catalog.count("tiles") == 400
    labels = (
        store.catalog.read("labels", columns=["label"], filter="task = 'pcam'").column("label").to_pylist()
    )
    assert Counter(labels) == {"normal": 200, PCAM_POSITIVE: 200}
    mpps = set(store.catalog.read("tiles", columns=["mpp"]).column("mpp").to_pylist())
    assert mpps == {PCAM_SAMPLE_MPP}
