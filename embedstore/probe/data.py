"""Deprecated: the probe's inputs (backbones, labelled tiles, groups, vectors) moved to
`embedstore.evaluate.tasks`; this path works, with a warning, for one release."""

from ..core.moved import forward

__getattr__ = forward("embedstore.probe.data", "embedstore.evaluate.tasks")
