"""Deprecated: `VectorSpace` moved to `embedstore.evaluate.space`; this path works, with a warning, for one
release."""

from ..core.moved import forward

__getattr__ = forward("embedstore.search.space", "embedstore.evaluate.space")
