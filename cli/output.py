"""Printing results: a report's text summary, or the report as JSON on stdout (`--json`)."""

from __future__ import annotations

import json
from typing import Any

import click


def emit(report: Any, as_json: bool) -> None:
    """Print `report.summary()`, or `report.to_dict()` as JSON."""
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(report.summary())


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
