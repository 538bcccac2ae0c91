"""Reading the user's tables (CSV, TSV, Parquet) with one-line errors: manifests, points, label files.

Every cell is text exactly as written (`007` stays `007`, `1e3` stays `1e3`, `TRUE` stays `TRUE`): labels,
tile ids, paths and group keys are names, never numbers. Only the columns a caller names as numeric
(coordinates) are parsed, and a cell that is not a number is an error naming the file, column and row.
Parquet keeps its own types; its non-numeric columns are turned into text (integers without `.0`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl

from .errors import EmbedstoreError

TABLE_SUFFIXES = {".csv", ".parquet", ".pq", ".tsv"}


def read_table(path: Path, numeric: Iterable[str] = ()) -> pl.DataFrame:
    """A CSV / TSV / Parquet file as a polars frame of text columns, the `numeric` ones (where present) as
    Float64; EmbedstoreError naming the file if it cannot be read."""
    if not path.exists():
        raise EmbedstoreError(f"{path}: no such file; check the path")
    frame = _read_parquet(path) if path.suffix.lower() in {".parquet", ".pq"} else _read_text_table(path)
    numeric = [column for column in numeric if column in frame.columns]
    frame = frame.with_columns(_as_text(path, frame.get_column(c)) for c in frame.columns if c not in numeric)
    return with_numbers(path, frame, numeric)


def with_numbers(path: Path, frame: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame:
    """`frame` with `columns` (coordinates) as Float64; EmbedstoreError naming the file, the column and the
    first row that is not a number."""
    return frame.with_columns(_as_numbers(path, frame.get_column(c)) for c in columns)


def require_columns(path: Path, frame: pl.DataFrame, needed: list[str], hint: str) -> None:
    """EmbedstoreError listing the missing columns and the ones the file has."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise EmbedstoreError(
            f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(frame.columns)}); {hint}"
        )


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as error:  # polars raises many error types for bad files
        raise _unreadable(path, error) from None


def _read_text_table(path: Path) -> pl.DataFrame:
    """A CSV (or TSV) with every column as text; a file that is not UTF-8 is refused with the fix."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise EmbedstoreError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}, e.g. a Latin-1 or "
            "Excel file); save it as UTF-8 (Excel: 'CSV UTF-8'; or iconv -f latin1 -t utf-8) and try again"
        ) from None
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        return pl.read_csv(data, separator=separator, infer_schema=False)
    except Exception as error:  # polars raises many error types for bad files
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> EmbedstoreError:
    return EmbedstoreError(
        f"{path}: cannot be read as a table ({type(error).__name__}); is it CSV/TSV/Parquet?"
    )


def _as_text(path: Path, column: pl.Series) -> pl.Series:
    """A column as text: strings unchanged; integral numbers without `.0` (Parquet float columns hold
    integers once a null is among them); NaN as missing."""
    if column.dtype == pl.String:
        return column
    if column.dtype.is_float():
        return pl.Series(column.name, [_float_text(v) for v in column.to_list()], dtype=pl.String)
    try:
        return column.cast(pl.String)
    except Exception:  # lists, structs, binary: no text form
        raise EmbedstoreError(
            f"{path}: column {column.name!r} holds {column.dtype} values, not text or numbers; "
            "store it as text"
        ) from None


def _float_text(value: float | None) -> str | None:
    if value is None or value != value:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def _as_numbers(path: Path, column: pl.Series) -> pl.Series:
    """A coordinate column as Float64; EmbedstoreError naming the first cell that is not a number."""
    text = column if column.dtype == pl.String else column.cast(pl.String, strict=False)
    if column.dtype.is_numeric():
        numbers = column.cast(pl.Float64)
    else:
        numbers = text.str.strip_chars().cast(pl.Float64, strict=False)
    bad = (numbers.is_null() | numbers.is_nan() | numbers.is_infinite()).arg_true()
    if len(bad):
        row = int(bad[0])
        shown = "empty" if text[row] is None or not text[row].strip() else f"{text[row]!r}"
        raise EmbedstoreError(
            f"{path}: column {column.name!r} must hold numbers, but row {row + 1} (after the header) is "
            f"{shown}; fix the file"
        )
    return numbers
