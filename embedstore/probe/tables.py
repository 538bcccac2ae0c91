"""The probe report as terminal text: the ranking per probe, the few-shot curve, the indicators."""

from __future__ import annotations

from typing import Any


def format_report(report: Any) -> str:
    lines: list[str] = []
    if report.task is not None:
        options = report.options
        lines.append(
            f"task {report.task}: {report.tiles} tiles in {report.groups} {report.group_by} groups, classes "
            f"{', '.join(report.classes)}; {_splits(report)}; {options.metric}, "
            f"mean [95 % CI]"
        )
        verdicts = {v["probe"]: v["text"] for v in report.verdicts()}
        for probe in report.ranking["probe"].unique(maintain_order=True).to_list():
            lines += _ranked(report, probe)
            lines.append(f"  => {verdicts[probe]}")
        lines += _legend(report)
        if report.few_shot.height:
            lines.append(_few_shot(report))
    if report.indicators:
        lines.append(_indicators(report.indicators))
    lines += [f"note: {note}" for note in report.notes]
    lines.append(f"({report.seconds:.1f} s)")
    return "\n".join(lines)


def _legend(report: Any) -> list[str]:
    alpha, ranking = report.options.alpha, report.ranking
    out = [
        f"\n~ best: not separated from the best (paired corrected t-test, p >= {alpha:g}), nor ranked below "
        "a backbone that is: the top group"
    ]
    if (ranking["tied_with_best"] & ~ranking["top_group"]).any():
        out.append(f"*: p >= {alpha:g}, but ranked below a backbone separated from the best (see note)")
    if ranking["top_share"].is_not_null().any():
        out.append(
            f"picked: share of {report.options.bootstrap} resamples of the {report.group_by} groups (with "
            "replacement) in which the backbone scores highest"
        )
    return out


def _ranked(report: Any, probe: str) -> list[str]:
    """One probe's ranking: rank, backbone, mean [CI], picked share (with the bootstrap), p, tag."""
    options = report.options
    shown = f"knn (k={options.rank_k})" if probe == "knn" else probe
    rows = report.ranking.filter(report.ranking["probe"] == probe).sort("rank").to_dicts()
    width = max(len(r["backbone"]) for r in rows)
    with_shares = any(r["top_share"] is not None for r in rows)
    out = [f"\n{shown}"]
    for row in rows:
        if row["rank"] == 1:
            tag = "best"
        elif row["top_group"]:
            tag = "~ best"
        else:
            tag = "*" if row["tied_with_best"] else ""
        picked = f"  picked {100 * row['top_share']:>3.0f} %" if with_shares else ""
        out.append(
            f"  {row['rank']:>2}  {row['backbone']:<{width}}  {row['mean']:.3f} "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]{picked}  p={row['p_vs_best']:.3f}  {tag}".rstrip()
        )
    return out


def _few_shot(report: Any) -> str:
    frame = report.few_shot
    shots = sorted(frame["shots"].unique().to_list())
    out = [f"\nfew-shot ({report.options.metric}, mean over folds x draws), by labelled tiles per class"]
    width = min(40, max(len(k) for k in report.backbones))
    header = "    " + " " * width + "".join(f"{s:>8}" for s in shots) + "     all"
    for probe in frame["probe"].unique(maintain_order=True).to_list():
        out.append(f"  {probe}")
        out.append(header)
        full = report.ranking.filter(report.ranking["probe"] == probe)
        for key in report.backbones:
            rows = {
                r["shots"]: r["mean"]
                for r in frame.filter((frame["probe"] == probe) & (frame["backbone"] == key)).to_dicts()
            }
            everything = full.filter(full["backbone"] == key)["mean"]
            cells = "".join(f"{rows[s]:>8.3f}" if s in rows else f"{'':>8}" for s in shots)
            tail = f"{everything[0]:>8.3f}" if len(everything) else ""
            out.append(f"    {key[:width]:<{width}}{cells}{tail}")
    return "\n".join(out)


def _indicators(indicators: dict[str, dict]) -> str:
    out = ["\nlabel-free indicators (no labels used)"]
    out.append(
        f"  {'backbone':<40} {'dim':>5} {'RankMe':>7} {'same-slide nbrs':>16} {'chance':>7} {'views':>7}"
    )
    warnings = []
    for key, found in indicators.items():
        slides = found.get("slide_clustering") or {}
        views = found.get("view_consistency") or {}
        same = f"{slides['same_slide']:.3f}" if slides else "-"
        chance = f"{slides['chance']:.3f}" if slides else "-"
        view = f"{views['same_tile']:.3f}" if views else "-"
        out.append(
            f"  {key[:40]:<40} {found['dim']:>5} {found['rankme']:>7.1f} {same:>16} {chance:>7} {view:>7}"
        )
        if slides and slides.get("warning"):
            warnings.append(f"  warning: {key}: {slides['warning']}")
    out.append(
        "  RankMe: effective rank of the embeddings; same-slide nbrs: share of the 10 nearest tiles from the "
        "same slide (chance: from slide sizes); views: nearest vector is a view of the same tile"
    )
    return "\n".join(out + warnings)


def _splits(report: Any) -> str:
    """ "5 folds x 3 seeds", with the distinct splits the statistics count when seeds repeated folds."""
    options = report.options
    text = f"{options.folds} folds x {options.seeds} seed{'s' if options.seeds != 1 else ''}"
    planned = options.folds * options.seeds
    if report.distinct_splits and report.distinct_splits < planned:
        text += f" ({report.distinct_splits} distinct splits)"
    return text
