"""The package version, in a leaf module that anything (pyproject, provenance, the CLI) can read."""

__version__ = "0.2.0"
