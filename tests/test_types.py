"""The type check runs in the suite: mypy on embedstore, heads and cli (settings in pyproject.toml's
[tool.mypy]) reports no error. Alone: `mypy` from the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_errors(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    try:
        from mypy import api
    except ImportError:
        pytest.fail("mypy is not installed: it is a dev dependency; pip install -e '.[dev]'")
    # mypy's incremental cache in pytest's cache folder: a cold run takes about a minute, a warm one seconds
    # (a fresh one in tmp_path when pytest runs without its cache plugin)
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("mypy") if cache is not None else tmp_path
    out, err, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(folder), "--no-error-summary"]
        + [str(ROOT / package) for package in ("embedstore", "heads", "cli")]
    )
    assert status == 0, f"mypy found type errors (run `mypy` to see them alone):\n{out}{err}"
