"""Turning the user's paths into source jobs: slides, image folders, flat image folders, manifests, points."""

from __future__ import annotations

import os
import string
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..core.errors import EmbedstoreError, a_few
from ..core.schema import GROUP_KEYS
from ..core.tabular import TABLE_SUFFIXES, read_table, require_columns
from ..maintenance.label_options import empty_labels_error, is_empty_label
from ..sources.slides import IMAGE_SUFFIXES, READABLE_SUFFIXES
from .options import KINDS

SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}


@dataclass
class SourceJob:
    """One file to ingest and what is known of it before opening it."""

    path: Path
    kind: str  # slide | image | points
    label: str | None = None  # the label of a whole-image tile
    label_origin: str | None = None
    groups: dict[str, str | None] = field(default_factory=dict)
    points: list[tuple[float, float, str | None]] = field(default_factory=list)  # (x, y, label) for points
    empty_labels: int = 0  # table rows of this job whose empty label was skipped (skip_empty_labels)
    table_row: str | None = None  # "manifest.csv row 3" for a manifest row

    def where(self) -> str:
        """Where this job's label came from, for conflict reports: its manifest row, else its file."""
        return f"{self.path} ({self.table_row})" if self.table_row else str(self.path)


@dataclass(frozen=True)
class TableColumns:
    """How to read a manifest or point table."""

    path_column: str = "path"
    path_template: str | None = None
    image_column: str = "image"
    label_column: str | None = None
    groups: tuple[tuple[str, str], ...] = ()  # (group key, column)
    images_dir: Path | None = None
    one_based: bool = False
    record_labels: bool = False  # a task is given: empty label cells are refused unless skip_empty_labels
    skip_empty_labels: bool = False


def discover(paths: list[Path], kind: str, dataset: str | None, columns: TableColumns) -> list[SourceJob]:
    """Every source job for the given paths; EmbedstoreError for missing paths, empty folders, bad tables."""
    if kind not in KINDS:
        raise EmbedstoreError(f"unknown --kind {kind!r}; use one of {', '.join(KINDS)}")
    if not paths:
        raise EmbedstoreError("no PATH given; name slides, image folders or a manifest to ingest")
    jobs: list[SourceJob] = []
    for path in paths:
        if not path.exists():
            raise EmbedstoreError(f"{path}: no such file or directory; check the path")
        path_kind = detect_kind(path, columns) if kind == "auto" else kind
        name = dataset or (path.stem if path.is_file() else path.name)
        if path_kind == "slide":
            found = _slide_jobs(path)
        elif path_kind == "imagefolder":
            found = _imagefolder_jobs(path)
        elif path_kind == "images":
            found = [SourceJob(p, "image", groups={"image": p.name}) for p in _images_in(path)]
        elif path_kind == "manifest":
            found = _manifest_jobs(path, columns)
        else:
            found = _points_jobs(path, columns)
        if not found:
            raise EmbedstoreError(f"{path}: nothing to ingest found as {path_kind}; check the path or --kind")
        for job in found:
            job.groups.setdefault("dataset", name)
        jobs.extend(found)
    return jobs


def detect_kind(path: Path, columns: TableColumns) -> str:
    """Guess what a path is: a table (manifest or points), an image folder, or slides."""
    if path.is_file():
        if path.suffix.lower() in TABLE_SUFFIXES:
            names = set(read_table(path).columns)
            is_points = {columns.image_column, "x", "y"} <= names and columns.path_template is None
            return "points" if is_points else "manifest"
        return "slide"
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    top_files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES]
    if subdirs and not top_files and any(_images_in(d, recursive=True) for d in subdirs):
        return "imagefolder"
    return "slide"


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        raise EmbedstoreError(f"{folder}: not a directory; --kind images needs a folder of images")
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _slide_jobs(path: Path) -> list[SourceJob]:
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES)
    )
    return [SourceJob(p, "slide", groups={"slide": p.name}) for p in files]


def _imagefolder_jobs(root: Path) -> list[SourceJob]:
    """root/<class>/*.png, or root/<split>/<class>/*.png when the first level is named like splits."""
    jobs: list[SourceJob] = []
    splits: list[tuple[str | None, Path]]
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs and all(d.name.lower() in SPLIT_NAMES for d in subdirs):
        splits = [(d.name, d) for d in subdirs]
    else:
        splits = [(None, root)]
    for split, split_dir in splits:
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for image in _images_in(class_dir, recursive=True):
                groups: dict[str, str | None] = {"image": str(image.relative_to(root)), "split": split}
                jobs.append(SourceJob(image, "image", class_dir.name, "folder", groups))
    return jobs


@dataclass
class _TableRows:
    """What a manifest or point table gives every row: where its image is found, its label, its groups."""

    finder: _FileFinder
    label_column: str | None
    labels: list[str | None]
    group_columns: dict[str, str]

    @classmethod
    def of(cls, path: Path, frame: pl.DataFrame, columns: TableColumns) -> _TableRows:
        label_column = _label_column(path, frame, columns)
        return cls(
            _FileFinder(path, columns.images_dir),
            label_column,
            _labels(path, frame, label_column, columns),
            _group_columns(frame, columns),
        )

    def groups(self, row: dict[str, Any], image: str) -> dict[str, Any]:
        """The row's group keys (the image itself when no image column is given)."""
        groups = {key: row[col] for key, col in self.group_columns.items()}
        groups.setdefault("image", image)
        return groups

    def empty(self, label: str | None) -> int:
        """1 when the table has a label column and this row's cell is empty."""
        return int(self.label_column is not None and label is None)


def _group_columns(frame: pl.DataFrame, columns: TableColumns) -> dict[str, str]:
    """Group key -> column: explicit --group KEY=COLUMN, else columns named like the group keys."""
    mapping = {key: key for key in GROUP_KEYS if key in frame.columns}
    mapping.update(dict(columns.groups))
    return mapping


def _label_column(path: Path, frame: pl.DataFrame, columns: TableColumns) -> str | None:
    if columns.label_column is not None:
        require_columns(path, frame, [columns.label_column], "fix --label-column")
        return columns.label_column
    return "label" if "label" in frame.columns else None


def _labels(path: Path, frame: pl.DataFrame, column: str | None, columns: TableColumns) -> list[str | None]:
    """Each row's label as written (None: no label column, or an empty cell that skip_empty_labels
    allows); with a task, empty cells are refused naming the file and the rows."""
    if column is None:
        return [None] * frame.height
    labels = frame.get_column(column).to_list()
    empty = [row for row, label in enumerate(labels, start=1) if is_empty_label(label)]
    if empty and columns.record_labels and not columns.skip_empty_labels:
        raise empty_labels_error(path, column, empty, "ingest those tiles without a label")
    return [None if is_empty_label(label) else label for label in labels]


def _text_cells(path: Path, frame: pl.DataFrame, column: str) -> list[str]:
    """A column's cells as text; EmbedstoreError naming the first empty one."""
    cells = frame.get_column(column).to_list()
    empty = [row for row, cell in enumerate(cells, start=1) if cell is None or not cell.strip()]
    if empty:
        raise EmbedstoreError(
            f"{path}: {len(empty)} row(s) have an empty {column!r} (first: row {empty[0]}); fill them in"
        )
    return cells


class _FileFinder:
    """Resolves a manifest's paths: relative to the table, to --images-dir, or by file name under it."""

    def __init__(self, table_path: Path, images_dir: Path | None) -> None:
        self.bases = [images_dir, table_path.parent] if images_dir else [table_path.parent]
        if images_dir is not None and not images_dir.is_dir():
            raise EmbedstoreError(f"--images-dir {images_dir}: not a directory; check the path")
        self.images_dir = images_dir
        self.table_path = table_path
        self._by_name: dict[str, list[Path]] | None = None

    def find(self, value: str, row: int) -> Path | None:
        """The file a table cell names; None when it is not found. With --images-dir, a relative path
        that climbs out of it (`../`) is refused: --images-dir is the root of the listed files."""
        candidate = Path(value).expanduser()
        if candidate.is_absolute():
            return candidate if candidate.exists() else None
        if self.images_dir is not None and os.path.normpath(candidate).split(os.sep)[0] == os.pardir:
            raise EmbedstoreError(
                f"{self.table_path}: row {row}'s path {value!r} leads outside --images-dir "
                f"{self.images_dir}; list paths inside it, or give an absolute path"
            )
        for base in self.bases:
            if (base / candidate).exists():
                return base / candidate
        if self.images_dir is None:
            return None
        if self._by_name is None:
            self._by_name = defaultdict(list)
            for file in self.images_dir.rglob("*"):
                if file.is_file():
                    self._by_name[file.name].append(file)
        matches = self._by_name.get(candidate.name, [])
        if len(matches) > 1:
            raise EmbedstoreError(
                f"file name {candidate.name} is ambiguous under {self.images_dir} ({len(matches)} files); "
                "give paths relative to --images-dir instead"
            )
        return matches[0] if matches else None


def _manifest_paths(path: Path, frame: pl.DataFrame, columns: TableColumns) -> list[str]:
    if columns.path_template is None:
        require_columns(path, frame, [columns.path_column], "name the path column with --path-column")
        return _text_cells(path, frame, columns.path_column)
    return _fill_template(path, frame, columns.path_template)


def _fill_template(path: Path, frame: pl.DataFrame, template: str) -> list[str]:
    """--path-template filled from each row's cells as written; a field with a format spec (`{uid:05d}`)
    gets the cell as a number when it is one."""
    parsed = [(name, spec) for _, name, spec, _ in string.Formatter().parse(template) if name]
    fields = list(dict.fromkeys(name for name, _ in parsed))
    require_columns(path, frame, fields, "fix --path-template")
    numeric = {name for name, spec in parsed if spec}
    cells = {name: _text_cells(path, frame, name) for name in fields}
    filled = []
    for row in range(frame.height):
        values = {name: _number_if(cells[name][row], name in numeric) for name in fields}
        try:
            filled.append(template.format(**values))
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as error:
            raise EmbedstoreError(
                f"--path-template {template!r} cannot be filled from row {row + 1} of {path} ({error}); "
                "fix the template"
            ) from None
    return filled


def _number_if(cell: str, wanted: bool) -> str | int | float:
    if not wanted:
        return cell
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            continue
    return cell


def _missing_files_error(path: Path, missing: list[str]) -> EmbedstoreError:
    shown = a_few(missing)
    return EmbedstoreError(
        f"{path}: {len(missing)} listed file(s) not found ({shown}); fix the paths or pass --images-dir"
    )


def _manifest_jobs(path: Path, columns: TableColumns) -> list[SourceJob]:
    """One whole-image tile per row: path (or --path-template), optional label and group columns."""
    frame = read_table(path)
    if frame.height == 0:
        raise EmbedstoreError(f"{path}: the manifest has no rows")
    table = _TableRows.of(path, frame, columns)
    require_columns(path, frame, list(table.group_columns.values()), "fix --group KEY=COLUMN")
    jobs, missing = [], []
    rows = zip(_manifest_paths(path, frame, columns), table.labels, frame.iter_rows(named=True), strict=True)
    for number, (value, label, row) in enumerate(rows, start=1):
        found = table.finder.find(value, number)
        if found is None:
            missing.append(value)
            continue
        origin = "manifest" if label is not None else None
        job = SourceJob(found, "image", label, origin, table.groups(row, value))
        job.empty_labels = table.empty(label)
        job.table_row = f"{path.name} row {number}"
        jobs.append(job)
    if missing:
        raise _missing_files_error(path, missing)
    return jobs


def _points_jobs(path: Path, columns: TableColumns) -> list[SourceJob]:
    """Point annotations: rows of image, x, y (, label); one tile centred on each point."""
    frame = read_table(path, numeric=["x", "y"])
    require_columns(path, frame, [columns.image_column, "x", "y"], "point tables need image, x, y columns")
    if frame.height == 0:
        raise EmbedstoreError(f"{path}: the point table has no rows")
    table = _TableRows.of(path, frame, columns)
    images = _text_cells(path, frame, columns.image_column)
    offset = 1.0 if columns.one_based else 0.0
    by_image: dict[str, SourceJob] = {}
    missing = []
    rows = zip(images, table.labels, frame.iter_rows(named=True), strict=True)
    for number, (image, label, row) in enumerate(rows, start=1):
        if image not in by_image:
            found = table.finder.find(image, number)
            if found is None:
                missing.append(image)
                by_image[image] = SourceJob(Path(image), "points")
                continue
            groups = table.groups(row, image)
            by_image[image] = SourceJob(found, "points", label_origin="points", groups=groups)
        by_image[image].points.append((row["x"] - offset, row["y"] - offset, label))
        by_image[image].empty_labels += table.empty(label)
    if missing:
        raise _missing_files_error(path, missing)
    return list(by_image.values())
