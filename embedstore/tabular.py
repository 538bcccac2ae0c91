"""Reading the user's tables (CSV, TSV, Parquet) with one-line errors: manifests, points, label files."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .errors import EmbedstoreError

TABLE_SUFFIXES = {".csv", ".parquet", ".pq", ".tsv"}


def read_table(path: Path) -> pl.DataFrame:
    """A CSV / TSV / Parquet file as a polars frame; EmbedstoreError naming the file if it cannot be read."""
    if not path.exists():
        raise EmbedstoreError(f"{path}: no such file; check the path")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pl.read_parquet(path)
        separator = "\t" if path.suffix.lower() == ".tsv" else ","
        return pl.read_csv(path, separator=separator, infer_schema_length=10_000)
    except Exception as error:  # polars raises many error types for bad files
        raise EmbedstoreError(
            f"{path}: cannot be read as a table ({type(error).__name__}); is it CSV/TSV/Parquet?"
        ) from None


def require_columns(path: Path, frame: pl.DataFrame, needed: list[str], hint: str) -> None:
    """EmbedstoreError listing the missing columns and the ones the file has."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise EmbedstoreError(
            f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(frame.columns)}); {hint}"
        )
