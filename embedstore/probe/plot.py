"""The probe report as a PNG: one panel per probe (score per backbone with its interval), then the
few-shot curves (score against labelled tiles per class). Each panel's title holds its verdict in words,
and the share of group resamples each backbone wins is written at the panel's right edge."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any


def draw_report(report: Any, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report.task is None:
        raise ValueError("a report without a task has no scores to plot")
    probes = report.ranking["probe"].unique(maintain_order=True).to_list()
    with_curves = report.few_shot.height > 0
    rows = 2 if with_curves else 1
    height = max(3.0, 0.35 * len(report.backbones) + 1.5)
    figure, axes = plt.subplots(
        rows, len(probes), figsize=(4.8 * len(probes), height + 3.5 * (rows - 1)), squeeze=False
    )
    colours = {key: plt.cm.tab10(i % 10) for i, key in enumerate(report.backbones)}
    metric = report.options.metric.replace("_", " ")
    verdicts = {v["probe"]: v["text"] for v in report.verdicts()}
    for column, probe in enumerate(probes):
        ax = axes[0][column]
        ranked = report.ranking.filter(report.ranking["probe"] == probe).sort("rank", descending=True)
        for y, row in enumerate(ranked.to_dicts()):
            error = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
            colour = colours[row["backbone"]]
            marker = "o" if row["top_group"] else "s"
            face = "white" if row["tied_with_best"] and not row["top_group"] else colour
            ax.errorbar(row["mean"], y, xerr=error, fmt=marker, color=colour, mfc=face, capsize=3)
            if row["top_share"] is not None:  # the bootstrap's share, at the panel's right edge
                ax.annotate(
                    f"{100 * row['top_share']:.0f} %",
                    (1.01, y),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    va="center",
                )
        ax.set_yticks(range(ranked.height), [_short(k) for k in ranked["backbone"]], fontsize=8)
        title = f"kNN (k={report.options.rank_k})" if probe == "knn" else probe
        words = verdicts[probe].split(": ", 1)[-1]
        ax.set_title(f"{title}\n" + textwrap.fill(words, 70), fontsize=7, loc="left")
        shares = ranked["top_share"].is_not_null().any()
        ax.set_xlabel(f"{metric} (95 % CI)" + ("; right: % of group resamples won" if shares else ""))
        ax.grid(axis="x", alpha=0.3)
        if with_curves:
            _curve(axes[1][column], report, probe, colours, metric)
    title = (
        f"probe on task {report.task}: {report.tiles} tiles, {report.groups} {report.group_by} groups; "
        "circles: the top group (not separated from the best, nor below one that is); open squares: "
        "p >= alpha below a separated backbone"
    )
    figure.suptitle(textwrap.fill(title, 65 * len(probes)), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _curve(ax: Any, report: Any, probe: str, colours: dict, metric: str) -> None:
    frame = report.few_shot.filter(report.few_shot["probe"] == probe)
    if frame.height == 0:
        ax.set_visible(False)
        return
    for key in report.backbones:
        rows = frame.filter(frame["backbone"] == key).sort("shots").to_dicts()
        if not rows:
            continue
        x = [r["shots"] for r in rows]
        ax.plot(x, [r["mean"] for r in rows], "o-", color=colours[key], label=_short(key), markersize=3)
        ax.fill_between(
            x, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], color=colours[key], alpha=0.12
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelled tiles per class")
    ax.set_ylabel(metric)
    ax.set_title(f"{probe}: few-shot", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def _short(key: str) -> str:
    return key if len(key) <= 34 else key[:16] + "…" + key[-16:]
