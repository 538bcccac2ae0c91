"""Deprecated: scores, corrected intervals and the paired test moved to `embedstore.evaluate.metrics`; this
path works, with a warning, for one release."""

from ..core.moved import forward

__getattr__ = forward("embedstore.probe.metrics", "embedstore.evaluate.metrics")
