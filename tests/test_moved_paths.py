"""Names moved to `embedstore.evaluate` (issue #21) stay importable from their old place for one release,
each use warning with the new place."""

from __future__ import annotations

import importlib

import pytest

MOVED = [
    ("embedstore.probe", "task_tiles", "embedstore.evaluate"),
    ("embedstore.probe", "group_folds", "embedstore.evaluate"),
    ("embedstore.probe", "split_scores", "embedstore.evaluate"),
    ("embedstore.probe.data", "resolve_backbones", "embedstore.evaluate.tasks"),
    ("embedstore.probe.splits", "Split", "embedstore.evaluate.folds"),
    ("embedstore.probe.metrics", "corrected_interval", "embedstore.evaluate.metrics"),
    ("embedstore.probe.neighbours", "cross_fold_neighbours", "embedstore.evaluate.neighbours"),
    ("embedstore.search.tuning", "exact_neighbours", "embedstore.evaluate.neighbours"),
    ("embedstore.search.tuning", "sample_queries", "embedstore.evaluate.neighbours"),
    ("embedstore.search.space", "VectorSpace", "embedstore.evaluate.space"),
]


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_an_old_import_path_still_works_and_warns(old, name, new):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        found = getattr(module, name)
    assert found is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018 (an unknown name is still an AttributeError)
