"""Commands load lazily: `--help`, `info`, `versions`, `labels`, `check` never import torch (or lancedb,
whose import alone takes seconds), so they answer at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import embedstore
from cli.commands import SUMMARIES

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from click.testing import CliRunner
from cli.main import app
runner = CliRunner()
results = {}
for args in json.loads(sys.argv[1]):
    result = runner.invoke(app, args)
    results[" ".join(args[:2])] = [result.exit_code, result.output]
heavy = [m for m in ("torch", "timm", "lancedb", "openslide") if m in sys.modules]
print(json.dumps({"results": results, "heavy": heavy}))
"""


def test_light_commands_never_import_torch(tmp_path, image_folder):
    store = embedstore.init(tmp_path / "s")
    store.ingest([image_folder], task="t", progress=False)
    tile = store.catalog.read("tiles", columns=["tile_id"]).column("tile_id")[0].as_py()
    (tmp_path / "labels.csv").write_text(f"tile_id,label\n{tile},x\n")
    commands = [
        ["--help"],
        ["info", str(store.root)],
        ["versions", str(store.root)],
        ["labels", "import", str(store.root), str(tmp_path / "labels.csv"), "--task", "other"],
        ["check", str(store.root)],
        ["embed", "--help"],
        ["ingest", "--help"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(done.stdout)
    assert "torch" not in found["heavy"] and "lancedb" not in found["heavy"], found["heavy"]
    for args, (code, output) in found["results"].items():
        assert code == 0, (args, output)
    listing = found["results"]["--help"][1]
    assert all(name in listing for name in SUMMARIES)
    assert "1 label(s) written for task 'other'" in found["results"]["labels import"][1]
    assert "--on-label-conflict [first|drop|error]" in found["results"]["ingest --help"][1]
