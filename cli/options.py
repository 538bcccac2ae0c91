"""Click options built from the options classes, and the arguments several commands share.

A field declared with `embedstore.core.validation.option` gives its flag, type, default, choices and help
here, so no default or choice is written twice. Nothing heavy is imported: `--help` stays instant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from embedstore.core.validation import (
    Flag,
    Integers,
    Interval,
    NamesFrom,
    OneOf,
    PathValue,
    flag_of,
    output_file,
)

if TYPE_CHECKING:
    from embedstore import Store

store_argument = click.argument("store", type=click.Path(file_okay=False, path_type=str))
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


class OutputFile(click.ParamType):
    """A file a command will write: refused while parsing (before any work) when it cannot be written,
    by the one rule of `embedstore.core.validation.output_file`."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        flags = [o for o in param.opts if o.startswith("--")] if param is not None else []
        return output_file(flags[0] if flags else "FILE", value)


OUTPUT_FILE = OutputFile()


def from_options(
    options_class: type, only: Iterable[str] | None = None, exclude: Iterable[str] = ()
) -> Callable[[Callable], Callable]:
    """A decorator adding one click option per CLI field of `options_class` (in declaration order)."""
    wanted = set(only) if only is not None else None
    fields = [
        f
        for f in dataclasses.fields(options_class)
        if f.metadata.get("cli", True)
        and f.metadata.get("constraint") is not None
        and (wanted is None or f.name in wanted)
        and f.name not in set(exclude)
    ]

    def decorate(command: Callable) -> Callable:
        for field in reversed(fields):
            command = _click_option(field)(command)
        return command

    return decorate


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _click_option(field: dataclasses.Field) -> Callable[[Callable], Callable]:
    constraint = field.metadata["constraint"]
    help_text = field.metadata.get("help", "")
    flag = flag_of(field)
    default = _default(field)
    if isinstance(constraint, Flag):
        if default is True:  # --no-progress turns progress off
            name = "--no-" + flag[2:]
            turned = help_text[:1].lower() + help_text[1:]
            return click.option(name, field.name, flag_value=False, default=True, help=f"Do not {turned}")
        return click.option(flag, field.name, is_flag=True, default=False, help=help_text)
    kind: Any = str
    if isinstance(constraint, Interval):
        kind = int if constraint.integer else float
    elif isinstance(constraint, OneOf):
        kind = click.Choice(constraint.choices)
    elif isinstance(constraint, PathValue):
        kind = OUTPUT_FILE if constraint.output else click.Path(path_type=Path)
    elif isinstance(constraint, NamesFrom | Integers):
        default = ",".join(str(v) for v in default) if default else default
    show = default is not None and default != ""
    extra = {"metavar": field.metadata["metavar"]} if field.metadata.get("metavar") else {}
    return click.option(
        flag, field.name, type=kind, default=default, show_default=show, help=help_text, **extra
    )


def open_existing(path: str) -> Store:
    """The store at `path`; a one-line error (exit 2) when it is not one."""
    from embedstore import open as open_store

    return open_store(path)
