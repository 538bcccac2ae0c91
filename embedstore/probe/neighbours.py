"""Deprecated: cross-fold neighbours moved to `embedstore.evaluate.neighbours`; this path works, with a
warning, for one release."""

from ..core.moved import forward

__getattr__ = forward("embedstore.probe.neighbours", "embedstore.evaluate.neighbours")
