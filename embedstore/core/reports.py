"""The one report protocol: what every verb's result answers (`summary`, `to_dict`, `write_json`).

    report = heads.train(store, "uni", "tumour")
    print(report.summary()); report.to_dict()["card"]; report.write_json("train.json")

`JsonReport` gives a result `write_json` from its `to_dict` (the one rule for `--json FILE`: checked by
`validation.output_file`, its folder made just before writing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .validation import output_file


@runtime_checkable
class Report(Protocol):
    """A verb's result: one line or a few for the terminal, plain data, and the same data as a JSON file."""

    def summary(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def write_json(self, path: str | os.PathLike) -> Path: ...


class JsonReport:
    """`write_json` from `to_dict` (values JSON cannot hold are written as text)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def write_json(self, path: str | os.PathLike) -> Path:
        """The report as JSON at `path` (a one-line error naming --json when it cannot be written)."""
        written = output_file("--json", path, make_folder=True)
        written.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")
        return written
