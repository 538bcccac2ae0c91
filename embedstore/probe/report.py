"""ProbeReport: per-split scores, their summary, the ranking with its paired tests, the few-shot curve
and the label-free indicators; as polars frames, a terminal table, JSON, CSV and a PNG."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..core.validation import output_file
from ..evaluate.metrics import Interval, corrected_interval, paired_p_value
from .options import ProbeOptions
from .verdicts import mark, stray_notes, verdicts

RANKED = ("knn", "prototype", "linear")


class SummaryFrame(pl.DataFrame):
    """`ProbeReport.summary`: the summary frame, which, called, is the report protocol's `summary()` (the
    report's terminal table, `ProbeReport.format`), so that the frame keeps its name and the probe's
    result answers what every verb's result answers (`embedstore.core.reports.Report`)."""

    _report: ProbeReport | None = None

    def __call__(self) -> str:
        if self._report is None:
            raise TypeError("this summary frame belongs to no ProbeReport")
        return self._report.format()


@dataclass
class ProbeReport:
    """What `probe` found. Frames:

    - scores: backbone, seed, fold, probe (knn@k, prototype, linear), metric, value: one row per distinct
      split (a split whose test set an earlier seed already had is not run again, see `distinct_splits`);
    - summary: backbone, probe, metric, mean, ci_low, ci_high (95 %, corrected for overlapping folds);
      called, `summary()` is the terminal table (`format()`), as for every verb's result;
    - ranking: probe (knn at rank_k, prototype, linear), rank, backbone, mean, ci_low, ci_high,
      p_vs_best (paired corrected t-test over the shared splits), tied_with_best (p >= alpha),
      top_group (rank 1 and the contiguous ranks below it with p >= alpha; see `verdicts`), top_share
      (share of the group resamples in which the backbone scores highest; null with bootstrap=0);
    - few_shot: backbone, probe, shots, mean, ci_low, ci_high (seed 0's folds x draws).

    `verdicts()` says per probe in words which backbones the data cannot tell from the best.
    """

    task: str | None
    backbones: list[str]
    options: ProbeOptions
    seconds: float
    indicators: dict[str, dict[str, Any]]
    classes: list[str] = field(default_factory=list)
    group_by: str | None = None
    tiles: int = 0
    groups: int = 0
    notes: list[str] = field(default_factory=list)
    distinct_splits: int = 0  # splits with a test set no other split had: the J of the intervals and tests
    scores: pl.DataFrame = field(default_factory=pl.DataFrame)
    summary: SummaryFrame = field(default_factory=SummaryFrame)  # a frame; summary() the text
    ranking: pl.DataFrame = field(default_factory=pl.DataFrame)
    few_shot: pl.DataFrame = field(default_factory=pl.DataFrame)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "summary":  # the frame, callable as this report's summary()
            value = SummaryFrame(value)
            value._report = self
        super().__setattr__(name, value)

    def __setstate__(self, state: dict[str, Any]) -> None:  # pickle, copy: the summary frame re-bound
        for name, value in state.items():
            setattr(self, name, value)

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def indicators_only(
        cls, keys: list[str], indicators: dict[str, dict], options: ProbeOptions, seconds: float
    ) -> ProbeReport:
        return cls(None, keys, options, seconds, indicators)

    @classmethod
    def build(
        cls,
        tiles: Any,
        keys: list[str],
        rows: list[dict],
        shot_rows: list[dict],
        indicators: dict[str, dict],
        options: ProbeOptions,
        folds: list[Any],
        seconds: float,
        shares: dict[str, dict[str, float]] | None = None,
    ) -> ProbeReport:
        test_fraction = float(np.mean([len(s.test) / len(s.train) for s in folds]))
        classes = {f"f1:{i}": f"f1:{name}" for i, name in enumerate(tiles.classes)}
        scores = pl.DataFrame(rows).with_columns(pl.col("metric").replace(classes))
        report = cls(
            tiles.task,
            keys,
            options,
            seconds,
            indicators,
            classes=list(tiles.classes),
            group_by=tiles.group_by,
            tiles=len(tiles.keys),
            groups=len(np.unique(tiles.groups)),
            notes=list(tiles.notes),
            distinct_splits=len({np.sort(s.test).tobytes() for s in folds}),
            scores=scores,
        )
        report.summary = SummaryFrame(_summary(scores, test_fraction))
        report.ranking = _ranking(scores, keys, options, test_fraction)
        report.ranking = mark(report.ranking, options.alpha, shares)
        report.notes += stray_notes(report.ranking, options.alpha, options.rank_k)
        report.few_shot = _few_shot(shot_rows, test_fraction)
        return report

    # -- reading --------------------------------------------------------------------------------------

    def best(self, probe: str = "linear") -> str:
        """The top-ranked backbone of `probe`."""
        top = self.ranking.filter((pl.col("probe") == probe) & (pl.col("rank") == 1))
        return str(top["backbone"][0])

    def verdicts(self) -> list[dict[str, Any]]:
        """Per ranked probe, in words: {probe, text, best, top_group, tied, decided, top_share}; see
        `verdicts.verdicts`."""
        return verdicts(self.ranking, self.options.alpha, self.options.rank_k)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "backbones": self.backbones,
            "classes": self.classes,
            "group_by": self.group_by,
            "tiles": self.tiles,
            "groups": self.groups,
            "options": {k: v for k, v in vars(self.options).items()},
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
            "distinct_splits": self.distinct_splits,
            "indicators": self.indicators,
            "verdicts": self.verdicts(),
        }
        for name in ("ranking", "summary", "few_shot", "scores"):
            frame = getattr(self, name)
            out[name] = frame.to_dicts() if frame.height else []
        return _finite(out)

    def write_json(self, path: str | os.PathLike) -> Path:
        """`to_dict` as JSON at `path` (NaN and infinities written as null)."""
        path = output_file("--json", path, make_folder=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    def write_csv(self, path: str | Path) -> Path:
        """The summary (every backbone, probe and metric, with intervals), with the ranks beside the
        ranked rows (the ranking metric; kNN at rank_k)."""
        path = output_file("--csv", path, make_folder=True)
        knn = f"knn@{self.options.rank_k}"
        ranks = self.ranking.select(
            pl.when(pl.col("probe") == "knn").then(pl.lit(knn)).otherwise(pl.col("probe")).alias("probe"),
            "backbone",
            pl.lit(self.options.metric).alias("metric"),
            "rank",
            "p_vs_best",
            "tied_with_best",
            "top_group",
            "top_share",
        )
        self.summary.join(ranks, on=["probe", "backbone", "metric"], how="left").write_csv(path)
        return path

    def plot(self, path: str | Path) -> Path:
        from .plot import draw_report

        return draw_report(self, output_file("--plot", path, make_folder=True))

    def format(self) -> str:
        from .tables import format_report

        return format_report(self)


def _summary(scores: pl.DataFrame, test_fraction: float) -> pl.DataFrame:
    rows = []
    for (backbone, probe, metric), group in scores.group_by(
        ["backbone", "probe", "metric"], maintain_order=True
    ):
        values = group["value"].drop_nans().to_numpy()
        if len(values) == 0:
            continue
        interval = _bounded(values, test_fraction)
        rows.append(
            {
                "backbone": backbone,
                "probe": probe,
                "metric": metric,
                "mean": interval.mean,
                "ci_low": interval.low,
                "ci_high": interval.high,
                "splits": len(values),
            }
        )
    return pl.DataFrame(rows)


def _ranking(
    scores: pl.DataFrame, keys: list[str], options: ProbeOptions, test_fraction: float
) -> pl.DataFrame:
    rows = []
    for probe in [p for p in RANKED if p in options.probes]:
        stored = f"knn@{options.rank_k}" if probe == "knn" else probe
        chosen = scores.filter((pl.col("probe") == stored) & (pl.col("metric") == options.metric))
        per_key = {
            key: chosen.filter(pl.col("backbone") == key).sort(["seed", "fold"])["value"].to_numpy()
            for key in keys
        }
        means = {key: float(np.nanmean(v)) for key, v in per_key.items()}
        order = sorted(keys, key=lambda k: -means[k])
        best = per_key[order[0]]
        for rank, key in enumerate(order, start=1):
            interval = _bounded(per_key[key], test_fraction)
            p = 1.0 if key == order[0] else paired_p_value(best, per_key[key], test_fraction)
            rows.append(
                {
                    "probe": probe,
                    "rank": rank,
                    "backbone": key,
                    "mean": interval.mean,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                    "p_vs_best": p,
                    "tied_with_best": bool(p >= options.alpha),
                }
            )
    return pl.DataFrame(rows)


def _few_shot(rows: list[dict], test_fraction: float) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame()
    out = []
    frame = pl.DataFrame(rows)
    for (backbone, probe, shots), group in frame.group_by(
        ["backbone", "probe", "shots"], maintain_order=True
    ):
        interval = _bounded(group["value"].drop_nans().to_numpy(), test_fraction)
        out.append(
            {
                "backbone": backbone,
                "probe": probe,
                "shots": shots,
                "mean": interval.mean,
                "ci_low": interval.low,
                "ci_high": interval.high,
                "runs": group.height,
            }
        )
    return pl.DataFrame(out).sort(["probe", "backbone", "shots"])


def _bounded(values: np.ndarray, test_fraction: float) -> Interval:
    """The corrected interval, clipped to [0, 1] where every metric here lies."""
    found = corrected_interval(values, test_fraction)
    return Interval(
        found.mean, float(np.clip(found.low, 0, 1)), float(np.clip(found.high, 0, 1))
    )  # NaN stays


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
