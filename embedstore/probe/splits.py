"""Deprecated: group-aware folds moved to `embedstore.evaluate.folds`; this path works, with a warning, for
one release."""

from ..core.moved import forward

__getattr__ = forward("embedstore.probe.splits", "embedstore.evaluate.folds")
