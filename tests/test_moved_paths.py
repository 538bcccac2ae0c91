"""Names and modules moved in issue #21 (to `embedstore.evaluate`, and into the layer packages) stay
importable from their old place for one release, each use warning with the new place."""

from __future__ import annotations

import importlib
import sys

import pytest

from embedstore.core.moved import MOVED_MODULES

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


# Whole modules that moved into the layer packages (issue #21): the old path imports the new module itself.
MOVED_MODULE_PATHS = sorted(
    {**MOVED_MODULES, "heads.data": "heads.tile_batches", "heads.demo": "heads.demo_head"}.items()
)


@pytest.mark.parametrize(("old", "new"), MOVED_MODULE_PATHS)
def test_an_old_module_path_imports_the_moved_module_and_warns(old, new):
    sys.modules.pop(old, None)  # imported once already (by another test): import it afresh
    importlib.import_module("heads" if old.startswith("heads") else "embedstore")
    with pytest.warns(DeprecationWarning, match=rf"module {old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_a_name_from_an_old_module_path_is_the_same_object():
    sys.modules.pop("embedstore.catalog", None)
    with pytest.warns(DeprecationWarning, match="embedstore.storage.catalog"):
        from embedstore.catalog import Catalog
    from embedstore.storage.catalog import Catalog as MovedCatalog

    assert Catalog is MovedCatalog
