"""Each benchmark's --smoke run (tiny generated data, seconds) writes its JSON with the expected keys."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# benchmark module -> keys its JSON must hold (the smoke runs that fit the test suite's time)
SMOKE = {
    "splits": {"machine", "smoke", "shapes"},
    "probe_stability": {"machine", "args", "rows"},
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_smoke_run_writes_its_json(name, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module(name)
    out = tmp_path / f"{name}.json"
    assert module.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert SMOKE[name] <= set(result)
    sys.modules.pop(name, None)
