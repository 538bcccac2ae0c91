"""Declarative constraints for options, checked once at the API boundary, with one message format.

Each field of an options dataclass is declared with `option(default, Constraint, help=...)`. Building the
options runs `validate`, which checks every field and raises one line: "--flag VALUE must be ...". The
same declarations give the CLI its options, defaults, choices and help (`cli.options.from_options`), so a
default or a choice is written once.

    @dataclass
    class Settings:
        batch_size: int = option(64, Interval(1, integer=True), help="Tiles per forward pass.")
        def __post_init__(self) -> None:
            validate(self)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import EmbedstoreError


class Constraint(ABC):
    """What values a field accepts; `coerce` normalises an accepted value (e.g. "a,b" -> ("a", "b"))."""

    @abstractmethod
    def accepts(self, value: Any) -> bool: ...

    @abstractmethod
    def describe(self) -> str:
        """The end of "--flag VALUE must be ...", e.g. "an integer >= 1"."""

    @abstractmethod
    def invalid_example(self) -> Any:
        """A value this constraint refuses (the options contract test feeds it to every field)."""

    def coerce(self, value: Any) -> Any:
        return value

    def refusal(self, value: Any) -> str:
        """The end of "--flag VALUE must be ..." for this refused value: `describe()`, unless a
        constraint can say more about the value (see SqlExpression)."""
        return self.describe()


@dataclasses.dataclass(frozen=True)
class Interval(Constraint):
    """A number in a range; `integer` refuses floats. Bounds are inclusive unless `open_low`/`open_high`."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    open_low: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"
        return f"{kind} <= {self.high:g}" if self.high is not None else kind

    def invalid_example(self) -> Any:
        if self.low is not None:
            return self.low if self.open_low else self.low - 1
        return self.high + 1 if self.high is not None else "not a number"


@dataclasses.dataclass(frozen=True)
class OneOf(Constraint):
    choices: tuple[str, ...]

    def accepts(self, value: Any) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return "one of " + "|".join(self.choices)

    def invalid_example(self) -> Any:
        return "no-such-choice"


@dataclasses.dataclass(frozen=True)
class Name(Constraint):
    """A non-empty name (task, dataset, backbone key, column): no leading/trailing spaces, one line."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value) and value == value.strip() and "\n" not in value

    def describe(self) -> str:
        return "a non-empty name without surrounding spaces"

    def invalid_example(self) -> Any:
        return ""


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclasses.dataclass(frozen=True)
class FileName(Constraint):
    """A name that becomes a file, folder, table or tag name in the store (index, head, task, tag): a
    name, never a path. ASCII letters, digits, '.', '_', '-', starting with a letter or digit, no '..',
    at most `max_length` characters. `tag`: also Lance's tag rules and ours: not all digits (digits name
    a version number), not ending in '.lock'."""

    max_length: int = 100
    tag: bool = False

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, str)
            and len(value) <= self.max_length
            and _FILE_NAME.fullmatch(value) is not None
            and ".." not in value
            and not (self.tag and (value.isdigit() or value.endswith(".lock")))
        )

    def describe(self) -> str:
        rule = (
            f"a non-empty name of at most {self.max_length} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
        return (
            rule + ", not all digits (digits are version numbers), not ending in '.lock'"
            if self.tag
            else rule
        )

    def invalid_example(self) -> Any:
        return "../.."


@dataclasses.dataclass(frozen=True)
class SqlExpression(Constraint):
    """One SQL expression on one line (a filter such as --where): no ';', every quote, comment and
    parenthesis closed, no ')' closing more than was opened. Lance parses a filter's first expression and
    ignores what follows it; an expression of this shape, parsed inside parentheses, is parsed in full."""

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, str)
            and bool(value.strip())
            and "\n" not in value
            and _sql_shape_problem(value) is None
        )

    def describe(self) -> str:
        return self._described("no ';', every quote and parenthesis closed")

    def refusal(self, value: Any) -> str:
        problem = _sql_shape_problem(value) if isinstance(value, str) and "\n" not in value else None
        return self._described(problem) if problem else self.describe()

    @staticmethod
    def _described(detail: str) -> str:
        return f"one SQL expression on one line ({detail}), e.g. \"dataset = 'cohort2' AND x > 100\""

    def invalid_example(self) -> Any:
        return "x > 1; drop table tiles"


def _sql_shape_problem(text: str) -> str | None:
    """Why `text` is not shaped like one expression (a ';', an unclosed quote, comment or parenthesis, a
    ')' too many), read as SQL's lexer does: quotes '...' (doubled inside), "..." and `...`, comments
    -- (to the end) and /* */; None when it is."""
    depth, at = 0, 0
    while at < len(text):
        char = text[at]
        if char in "'\"`":
            end = text.find(char, at + 1)
            if end < 0:
                return f"a {char} quote is never closed"
            at = end + 1  # a doubled quote ('it''s') is two strings back to back: the same shape
            continue
        if text.startswith("--", at):
            break
        if text.startswith("/*", at):
            end = text.find("*/", at + 2)
            if end < 0:
                return "a /* comment is never closed"
            at = end + 2
            continue
        if char == ";":
            return "a ';' ends it there and the rest would be ignored"
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return "a ')' closes more than was opened"
        at += 1
    return "a '(' is never closed" if depth else None


@dataclasses.dataclass(frozen=True)
class Flag(Constraint):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"

    def invalid_example(self) -> Any:
        return "yes"


@dataclasses.dataclass(frozen=True)
class PathValue(Constraint):
    """A filesystem path, given as str or Path; `existing` also requires it to exist; `output` requires a
    file this process can write (see `output_problem`), checked before the work, so that a command never
    fails at its end for want of its output."""

    existing: bool = False
    output: bool = False

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str | os.PathLike) or not str(value):
            return False
        if self.output:
            return output_problem(value) is None
        return not self.existing or os.path.exists(value)

    def describe(self) -> str:
        if self.output:
            return "a file you can write (in a folder that exists or can be created)"
        return "an existing path; check it" if self.existing else "a path"

    def invalid_example(self) -> Any:
        return 3

    def coerce(self, value: Any) -> Any:
        from pathlib import Path

        return Path(value).expanduser() if isinstance(value, str | os.PathLike) and str(value) else value


def output_problem(path: str | os.PathLike) -> str | None:
    """Why a file cannot be written at `path` (a folder in its place, a folder that cannot be made, no
    permission), or None when it can; a missing folder is fine when it can be created. Local paths only:
    other URIs are left to the writer."""
    text = os.fspath(path)
    if "://" in text:
        return None
    if os.path.isdir(text):
        return "it is a folder; name a file in it"
    folder = os.path.dirname(os.path.abspath(text))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, so the folder {folder} cannot be made; choose another folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        made = "" if existing == folder else f" (to create {folder} in it)"
        return f"you may not write in {existing}{made}; choose another folder"
    if os.path.exists(text) and not os.access(text, os.W_OK):
        return "the file exists and is not writable; choose another name"
    return None


def output_file(flag: str, path: str | os.PathLike, make_folder: bool = False) -> Path:
    """`path` as a Path when a file can be written there, else the one-line error naming `flag` and why:
    the one rule for every output file option (--json FILE, --csv, --plot, --html, --out, --export,
    --export-geojson), checked before the work, so that a command never fails at its end. A missing
    folder is created (with its parents) only with `make_folder`, by the writer just before it writes,
    so a command that fails earlier leaves none behind."""
    value = check_value(flag, path, PathValue())
    problem = output_problem(value)
    if problem is not None:
        raise invalid(flag, os.fspath(path), f"a file you can write: {problem}")
    if make_folder:
        value.parent.mkdir(parents=True, exist_ok=True)
    return value


@dataclasses.dataclass(frozen=True)
class Function(Constraint):
    def accepts(self, value: Any) -> bool:
        return callable(value)

    def describe(self) -> str:
        return "a function"

    def invalid_example(self) -> Any:
        return 3


@dataclasses.dataclass(frozen=True)
class Names(Constraint):
    """Distinct names, as a tuple, one name or one comma-separated string (coerced to a tuple); `empty`:
    no name at all is accepted too."""

    empty: bool = True

    def coerce(self, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(","))
        if isinstance(value, Iterable):
            return tuple(value)
        return value

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, tuple)
            and (self.empty or bool(value))
            and all(Name().accepts(name) for name in value)
            and len(set(value)) == len(value)
        )

    def describe(self) -> str:
        return "distinct non-empty names, comma-separated"

    def invalid_example(self) -> Any:
        return ("a", "a")


@dataclasses.dataclass(frozen=True)
class NamesFrom(Constraint):
    """Distinct names out of `choices`, as a tuple or one comma-separated string (coerced to a tuple)."""

    choices: tuple[str, ...]

    def coerce(self, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        if isinstance(value, Iterable):
            return tuple(value)
        return value

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, tuple)
            and all(name in self.choices for name in value)
            and len(set(value)) == len(value)
        )

    def describe(self) -> str:
        return "distinct names among " + ",".join(self.choices)

    def invalid_example(self) -> Any:
        return "no-such-name"


@dataclasses.dataclass(frozen=True)
class Integers(Constraint):
    """Distinct integers >= `low`, as a tuple or one comma-separated string (coerced to a sorted tuple)."""

    low: int = 1

    def coerce(self, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not all(part.lstrip("-").isdigit() for part in parts):
                return value
            value = [int(part) for part in parts]
        if isinstance(value, Iterable) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(sorted(value))
        return value

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, tuple)
            and bool(value)
            and all(v >= self.low for v in value)
            and len(set(value)) == len(value)
        )

    def describe(self) -> str:
        return f"distinct integers >= {self.low}, comma-separated"

    def invalid_example(self) -> Any:
        return "one,two"


@dataclasses.dataclass(frozen=True)
class MappingOf(Constraint):
    """A mapping whose keys are among `keys` and whose values are names."""

    keys: tuple[str, ...]

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping) and all(
            k in self.keys and Name().accepts(v) for k, v in value.items()
        )

    def describe(self) -> str:
        return "a mapping KEY=COLUMN with KEY among " + ",".join(self.keys)

    def invalid_example(self) -> Any:
        return {"no-such-key": "column"}


def option(
    default: Any = dataclasses.MISSING,
    constraint: Constraint | None = None,
    *,
    help: str = "",
    optional: bool = False,
    flag: str | None = None,
    cli: bool = True,
    default_factory: Callable[[], Any] | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its constraint and CLI help.

    optional: None is accepted too; flag: the CLI spelling (default `--field-name`); cli: False keeps a
    field out of the command line (tuning knobs, callbacks); metavar: the CLI's name for the value.
    """
    metadata = {"constraint": constraint, "help": help, "optional": optional, "flag": flag, "cli": cli}
    if metavar is not None:
        metadata["metavar"] = metavar
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def invalid(flag: str, value: Any, must: str) -> EmbedstoreError:
    """The one message format: `--flag VALUE must be ...`."""
    if isinstance(value, tuple | list):
        value = ",".join(str(v) for v in value)
    shown = repr(value) if isinstance(value, str) else str(value)
    return EmbedstoreError(f"{flag} {shown} must be {must}".replace("\n", " "))


def validate(options: Any) -> None:
    """Check (and normalise) every declared field, then the options' own `check_relations`, if any."""
    for field in dataclasses.fields(options):
        constraint = field.metadata.get("constraint")
        if constraint is None:
            continue
        given = getattr(options, field.name)
        if given is None and field.metadata.get("optional"):
            continue
        value = constraint.coerce(given)
        if not constraint.accepts(value):
            raise invalid(flag_of(field), given, constraint.refusal(value))
        setattr(options, field.name, value)
    check_relations = getattr(options, "check_relations", None)
    if check_relations is not None:
        check_relations()


def options_from(options_class: type, options: Any | None, overrides: dict[str, Any]) -> Any:
    """The options a verb runs with: `options` (checked again, in case it was changed after it was
    built) with `overrides` applied, or `options_class(**overrides)`."""
    if options is None:
        return options_class(**overrides)
    if overrides:
        return dataclasses.replace(options, **overrides)
    validate(options)
    return options


def check_value(flag: str, value: Any, constraint: Constraint, optional: bool = False) -> Any:
    """One value outside an options class (e.g. a query argument), in the same message format."""
    if value is None and optional:
        return value
    coerced = constraint.coerce(value)
    if not constraint.accepts(coerced):
        raise invalid(flag, value, constraint.refusal(coerced))
    return coerced
