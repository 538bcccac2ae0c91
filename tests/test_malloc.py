"""The malloc arena cap that `import embedstore` applies, and the ways to leave glibc alone."""

from __future__ import annotations

import sys

import pytest

from embedstore.runtime.allocator import cap_malloc_arenas


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_the_cap_is_at_least_two_arenas_and_at_most_the_cores(monkeypatch):
    import os

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("EMBEDSTORE_MALLOC_ARENAS", raising=False)
    cap = cap_malloc_arenas()
    assert cap == max(2, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("variable, value", [("MALLOC_ARENA_MAX", "4"), ("EMBEDSTORE_MALLOC_ARENAS", "0")])
def test_an_explicit_setting_leaves_glibc_alone(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert cap_malloc_arenas() is None
