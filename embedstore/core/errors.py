"""Errors that carry a one-line message for the user: what is wrong and how to fix it."""

from __future__ import annotations

import errno
from collections.abc import Sequence

_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)
# How Lance (`... (os error 13)`) and object stores (S3 `AccessDenied`, HTTP 403) word a refused write.
_REFUSED_WORDS = (
    "permission denied",
    "read-only file system",
    "os error 13",
    "os error 30",
    "access denied",
    "accessdenied",
    "access_denied",
    "forbidden",
)
_NO_SPACE_WORDS = ("no space left on device", "os error 28")
# How torch words an allocation that failed (CUDA's OutOfMemoryError, the CPU allocator's RuntimeError).
_NO_MEMORY_WORDS = ("out of memory", "can't allocate memory", "not enough memory")


def a_few(items: Sequence[object], shown: int = 3) -> str:
    """The first `shown` items, comma-separated, with " ..." when there are more: for naming bad rows."""
    return ", ".join(str(item) for item in items[:shown]) + (" ..." if len(items) > shown else "")


class EmbedstoreError(Exception):
    """Bad input or state the user can fix. The CLI prints the message and exits with code 2."""


class NotAStoreError(EmbedstoreError):
    """A path was given as a store but holds no embedstore store."""


class ReadOnlyStoreError(EmbedstoreError):
    """A writing verb was asked of a store this process may not write."""


class SourceError(EmbedstoreError):
    """A slide, image or manifest could not be read or tiled."""


class BackboneError(EmbedstoreError):
    """A backbone key is unknown, or its weights are missing or do not fit."""


def is_write_refused(error: BaseException) -> bool:
    """True for a write the system refused: EACCES, EPERM or EROFS, or an error raised by Lance or an
    object store that says so in its text (Lance reports the OS's error only there)."""
    if not isinstance(error, OSError):
        return False
    return error.errno in _REFUSED or _says(error, _REFUSED_WORDS)


def os_error_line(error: BaseException) -> str | None:
    """One line for an OS-level failure the user can act on (a refused write, a full disk, too little
    memory); None for any other error."""
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and _says(error, _NO_MEMORY_WORDS)):
        return "out of memory; use a smaller --batch-size (or fewer --workers), or a machine with more memory"
    if not isinstance(error, OSError):
        return None
    where = f": {error.filename}" if error.filename else ""
    if error.errno == errno.ENOSPC or _says(error, _NO_SPACE_WORDS):
        return f"no space left on device{where}; free some space (e.g. `embedstore compact`) and run again"
    if is_write_refused(error):
        where = where or f" ({first_line(error)})"  # Lance and polars name the path in the text only
        return f"permission denied{where}; make it writable for this user (chmod/chown) or use another path"
    return None


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), without Lance's source
    locations (", /path/file.rs:1:2") and its "External error: " prefix."""
    text = (error.strerror if isinstance(error, OSError) and error.strerror else str(error)).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line.split(", /")[0].removeprefix("External error: ")


def _says(error: BaseException, words: tuple[str, ...]) -> bool:
    text = str(error).lower()
    return any(word in text for word in words)


class TableDamagedError(EmbedstoreError):
    """A table's files are missing or do not read; `embedstore check` names the version to restore."""

    def __init__(self, table: str, problem: str, store: str) -> None:
        self.table, self.problem, self.store = table, problem, store
        super().__init__(
            f"table {table!r} is damaged: {problem}; run `embedstore check {store}`, which names the fix"
        )

    def __reduce__(self) -> tuple:  # picklable (Ray workers raise it) despite its own arguments
        return type(self), (self.table, self.problem, self.store)
