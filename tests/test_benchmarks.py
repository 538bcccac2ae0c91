"""Every benchmark stays alive: its --smoke run (tiny generated data, seconds) writes its JSON, and
importing it warns of no moved name. A new file in benchmarks/ without --smoke fails here."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
NAMES = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "harness")

# benchmark -> the main keys of its JSON besides "smoke" (a new benchmark adds its line)
KEYS = {
    "embed_throughput": {"machine", "throughput", "agreement", "layouts", "allocator"},
    "embed_writer": {"machine", "args", "sizes"},
    "gpu_embed": {"machine", "args", "tiles", "runs"},
    "heads": {"machine", "args", "scarce", "speed", "memory", "targets"},
    "ingest": {"machine", "first_run", "second_run", "write_path", "startup_seconds", "check_ok"},
    "make_pcam_sample": {"machine", "counts", "bytes", "how"},
    "probe_defaults": {"machine", "settings", "targets"},
    "probe_speed": {"machine", "embedstore_seconds", "sklearn_seconds", "targets", "per_backbone"},
    "probe_stability": {"machine", "args", "rows"},
    "proxy_selection": {"machine", "prepare", "embedding", "downstream", "proxy", "report"},
    "scale": {"machine", "runs", "rounds", "same_rows_local_vs_ray", "ingest_local_vs_ray", "targets"},
    "scale_probe_heads": {"machine", "args", "sizes", "targets"},
    "scale_cluster": {"machine", "args", "commit", "writers", "ray", "projection"},
    "scale_reads": {"machine", "args", "sizes"},
    "scale_store": {"machine", "args", "keyed_commit", "writers", "targets"},
    "search": {"machine", "speed", "targets", "quality"},
    "search_centring": {"machine", "summary", "numpy_overlap_top200"},
    "search_scale": {"machine", "args", "runs"},
    "splits": {"machine", "shapes"},
    "store_versions": {"machine", "args", "fragment_limit", "cases"},
}

# benchmark -> the optional extra it cannot run without (`pip install "embedstore[ray]"`)
EXTRAS = {"scale": "ray", "scale_cluster": "ray"}


def load(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module named `benchmark_<name>` (benchmarks/heads.py must not take the
    `heads` package's name), with benchmarks/ on sys.path after the checkout for `import harness`."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_writes_its_json(name, tmp_path):
    if name in EXTRAS:
        pytest.importorskip(EXTRAS[name], reason=f"benchmarks/{name}.py needs the {EXTRAS[name]} extra")
    out = tmp_path / f"{name}.json"
    assert load(name).main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    assert name in KEYS, f"name the main keys of benchmarks/{name}.py's JSON in KEYS"
    assert KEYS[name] <= set(result)


@pytest.mark.parametrize("name", NAMES)
def test_import_warns_of_no_moved_name(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        load(name)
