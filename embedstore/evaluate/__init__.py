"""Evaluation shared by probe, heads and search: a task's labelled tiles, group-aware folds, scores and
exact neighbours, so that a head and a probe split and score alike.

- `tasks`: `task_tiles` (a task's labelled tiles every backbone has, their classes, codes and groups:
  patient > slide > image > tile unless `group_by`), `TaskTiles`, `resolve_backbones`, `aligned_vectors`
- `folds`: `group_folds` (stratified group k-fold, the same for every backbone), `Split`, inner and
  few-shot folds, distinct splits
- `metrics`: `split_scores` (balanced accuracy, macro-F1, AUROC, F1 per class of one test set),
  corrected intervals over splits, the paired test
- `neighbours`: `exact_neighbours`, `sample_queries`, `cross_fold_neighbours`
- `space`: `VectorSpace` (cosine on centred unit vectors, or L2)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .folds import Split, group_folds
    from .metrics import split_scores
    from .neighbours import exact_neighbours, sample_queries
    from .space import VectorSpace
    from .tasks import TaskTiles, task_tiles

# loaded on first use (metrics pulls in scipy, neighbours FAISS): `embedstore --help` stays fast
_LAZY = {
    "TaskTiles": ".tasks",
    "task_tiles": ".tasks",
    "Split": ".folds",
    "group_folds": ".folds",
    "split_scores": ".metrics",
    "exact_neighbours": ".neighbours",
    "sample_queries": ".neighbours",
    "VectorSpace": ".space",
}

__all__ = [
    "Split",
    "TaskTiles",
    "VectorSpace",
    "exact_neighbours",
    "group_folds",
    "sample_queries",
    "split_scores",
    "task_tiles",
]


__getattr__ = lazy_exports(__name__, _LAZY)
