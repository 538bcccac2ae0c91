"""The ranking in words: the top group, the top pick's bootstrap share and one sentence per probe.

The rule for the tags: the top group is rank 1 and every following rank down to the first whose paired
p-value against the best is below alpha; it is contiguous from rank 1, so a tag never sits below an
untagged rank. `tied_with_best` keeps its own meaning (p >= alpha); a variant with p >= alpha below the
first separated one is not in the top group (its mean is lower than that of a variant clearly worse
than the best: its p-value alone is noisy), and a note says so.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

LIKELY = 0.8  # a bootstrap share from which the words call a tied pick "favoured"


def mark(ranking: pl.DataFrame, alpha: float, shares: dict[str, dict[str, float]] | None) -> pl.DataFrame:
    """`ranking` with `top_group` (bool) and `top_share` (share of resamples won; null when skipped)."""
    if ranking.height == 0:
        return ranking
    inside: dict[tuple[str, str], bool] = {}
    for probe in ranking["probe"].unique(maintain_order=True).to_list():
        rows = ranking.filter(pl.col("probe") == probe).sort("rank").to_dicts()
        for row, member in zip(rows, top_group_of([r["p_vs_best"] for r in rows], alpha), strict=True):
            inside[(probe, row["backbone"])] = member
    pairs = list(zip(ranking["probe"].to_list(), ranking["backbone"].to_list(), strict=True))
    return ranking.with_columns(
        pl.Series("top_group", [inside[pair] for pair in pairs], dtype=pl.Boolean),
        pl.Series("top_share", [(shares or {}).get(p, {}).get(b) for p, b in pairs], dtype=pl.Float64),
    )


def top_group_of(p_values: list[float], alpha: float) -> list[bool]:
    """In rank order: rank 1, then each rank while every p-value from rank 2 down to it is >= alpha."""
    found, going = [], True
    for rank, p in enumerate(p_values):
        going = going and (rank == 0 or (not math.isnan(p) and p >= alpha))
        found.append(going)
    return found


def verdicts(ranking: pl.DataFrame, alpha: float, rank_k: int) -> list[dict[str, Any]]:
    """One {probe, text, best, top_group, tied, decided, top_share} per ranked probe. `tied`: every
    backbone with p >= alpha against the best; `decided`: none is (the paired test separates the best
    from every other backbone)."""
    out = []
    for probe in ranking["probe"].unique(maintain_order=True).to_list() if ranking.height else []:
        rows = ranking.filter(pl.col("probe") == probe).sort("rank").to_dicts()
        out.append(_verdict(probe, rows, alpha, rank_k))
    return out


def stray_notes(ranking: pl.DataFrame, alpha: float, rank_k: int) -> list[str]:
    """Why a backbone with p >= alpha is not in the top group, one note each."""
    notes = []
    for probe in ranking["probe"].unique(maintain_order=True).to_list() if ranking.height else []:
        rows = ranking.filter(pl.col("probe") == probe).sort("rank").to_dicts()
        separated = next((r for r in rows if not r["top_group"]), None)
        for row in rows:
            if row["tied_with_best"] and not row["top_group"] and separated is not None:
                notes.append(
                    f"{_name(probe, rank_k)}: {row['backbone']} (rank {row['rank']}) has p = "
                    f"{row['p_vs_best']:.3f} >= {alpha:g} against the best, yet ranks below "
                    f"{separated['backbone']} (rank {separated['rank']}, "
                    f"p = {separated['p_vs_best']:.3f}), which is clearly worse than the best; so it is "
                    "not in the top group (one p-value alone is "
                    "noisy: a lower mean with more spread over the splits can give a larger p)"
                )
    return notes


def _verdict(probe: str, rows: list[dict], alpha: float, rank_k: int) -> dict[str, Any]:
    name, best = _name(probe, rank_k), rows[0]
    group = [r for r in rows if r["top_group"]]
    tied = [r for r in rows[1:] if r["tied_with_best"]]
    stray = [r for r in tied if not r["top_group"]]
    shares = {r["backbone"]: r["top_share"] for r in rows if r["top_share"] is not None}
    if len(rows) == 1:
        text = f"{name}: {best['backbone']} is the only backbone probed"
    elif all(math.isnan(r["p_vs_best"]) for r in rows[1:]):
        text = (
            f"{name}: {best['backbone']} ranks first, but with fewer than 2 distinct splits the paired test "
            "cannot separate backbones (use more --folds or --seeds)"
        )
    elif not tied:
        text = f"{name}: {best['backbone']} is best, clearly (every other p < {alpha:g}"
        text += f"; picked in {_percent(shares[best['backbone']])} of resamples)" if shares else ")"
        if shares and shares[best["backbone"]] < 0.5:
            text += ", but the resamples often pick another: its lead rests on a few groups"
    elif len(group) > 1:
        listed = ", ".join(r["backbone"] for r in group)
        text = (
            f"{name}: {len(group)} of {len(rows)} backbones are within the noise of the best "
            f"(p >= {alpha:g}): {listed}; "
        )
        favourite = max(shares, key=shares.__getitem__) if shares else None
        if favourite is not None and shares[favourite] >= LIKELY:
            text += (
                f"the paired test cannot separate them, though the bootstrap favours {favourite} (picked "
                f"in {_percent(shares[favourite])} of resamples)"
            )
        else:
            text += "the data do not decide among them"
            if shares:
                text += f"; the bootstrap picks {_picks(shares)} of resamples"
    else:
        second = rows[1]
        text = (
            f"{name}: {best['backbone']} leads and the next, {second['backbone']}, is clearly worse "
            f"(p = {second['p_vs_best']:.3f})"
        )
        if shares:
            text += f"; picked in {_percent(shares[best['backbone']])} of resamples"
    if stray:
        listed = ", ".join(f"{r['backbone']} (rank {r['rank']}, p = {r['p_vs_best']:.3f})" for r in stray)
        text += (
            f"; {listed} {'is' if len(stray) == 1 else 'are'} not separated from the best either, but "
            "ranked below a backbone that is (see note)"
        )
    return {
        "probe": probe,
        "text": text,
        "best": best["backbone"],
        "top_group": [r["backbone"] for r in group],
        "tied": [r["backbone"] for r in tied],
        "decided": bool(len(rows) > 1 and not tied and not math.isnan(rows[1]["p_vs_best"])),
        "top_share": shares or None,
    }


def _picks(shares: dict[str, float]) -> str:
    """'A in 41 %, B in 30 %, others in 4 %': the backbones that win at least 5 % of resamples."""
    ordered = sorted(shares.items(), key=lambda item: -item[1])
    shown = [(k, s) for k, s in ordered if s >= 0.05] or ordered[:1]
    rest = 1.0 - sum(s for _, s in shown)
    parts = [f"{k} in {_percent(s)}" for k, s in shown]
    if rest >= 0.005:
        parts.append(f"others in {_percent(rest)}")
    return ", ".join(parts)


def _percent(share: float) -> str:
    return f"{100 * share:.0f} %"


def _name(probe: str, rank_k: int) -> str:
    return f"knn (k={rank_k})" if probe == "knn" else probe
