"""Errors that carry a one-line message for the user: what is wrong and how to fix it."""

from __future__ import annotations


class EmbedstoreError(Exception):
    """Bad input or state the user can fix. The CLI prints the message and exits with code 2."""


class NotAStoreError(EmbedstoreError):
    """A path was given as a store but holds no embedstore store."""


class SourceError(EmbedstoreError):
    """A slide, image or manifest could not be read or tiled."""


class BackboneError(EmbedstoreError):
    """A backbone key is unknown, or its weights are missing or do not fit."""


class TableDamagedError(EmbedstoreError):
    """A table's files are missing or do not read; `embedstore check` names the version to restore."""

    def __init__(self, table: str, problem: str, store: str) -> None:
        self.table, self.problem, self.store = table, problem, store
        super().__init__(
            f"table {table!r} is damaged: {problem}; run `embedstore check {store}`, which names the fix"
        )

    def __reduce__(self) -> tuple:  # picklable (Ray workers raise it) despite its own arguments
        return type(self), (self.table, self.problem, self.store)
