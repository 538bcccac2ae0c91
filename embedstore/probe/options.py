"""What `probe` can be told. A leaf: importable without FAISS or scikit-learn (for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.validation import Flag, Integers, Interval, Name, NamesFrom, OneOf, invalid, option, validate

PROBES = ("knn", "prototype", "linear")
METRICS = ("balanced_accuracy", "macro_f1", "auroc")
KNN_KS = (1, 5, 10, 20, 50)
SHOTS = (4, 16, 64, 256)


@dataclass
class ProbeOptions:
    """How to probe backbones on a labelled task: folds, seeds, probes, the few-shot curve, the ranking."""

    group_by: str | None = option(
        None,
        Name(),
        optional=True,
        help="Tile column whose groups never straddle train and test [default: patient, slide or image, "
        "the first set for every labelled tile].",
    )
    folds: int = option(5, Interval(2, integer=True), help="Cross-validation folds.")
    seeds: int = option(
        2,
        Interval(1, integer=True),
        help="Repetitions of the folds, each seed permuting the groups anew; "
        "a split that an earlier seed already gave (too few groups to differ) is counted once. With 5 "
        "folds, 2 seeds give intervals about 28 % narrower than 1, a third seed about 10 % more, each seed "
        "costing as much time as the first.",
    )
    probes: tuple[str, ...] = option(PROBES, NamesFrom(PROBES), help="Probes to run, comma-separated.")
    knn_k: tuple[int, ...] = option(KNN_KS, Integers(1), help="k of the kNN probe (one search per fold).")
    rank_k: int = option(20, Interval(1, integer=True), help="The kNN k that the ranking and plot show.")
    metric: str = option("balanced_accuracy", OneOf(METRICS), help="Metric the ranking sorts by.")
    shots: tuple[int, ...] | None = option(
        None,
        Integers(1),
        optional=True,
        help="Few-shot curve: labelled tiles per class, comma-separated, e.g. 4,16,64,256 (about doubles "
        "the time); none to skip it.",
    )
    shot_draws: int = option(3, Interval(1, integer=True), help="Random draws per fold at each shot count.")
    inner_folds: int = option(
        3, Interval(2, integer=True), help="Inner folds choosing the linear probe's L2 strength."
    )
    indicators: bool = option(
        False,
        Flag(),
        help="Report the label-free indicators over the task's tiles too (always shown without --task).",
    )
    alpha: float = option(
        0.05, Interval(0.0, 1.0, open_low=True), help="Level of the paired test that separates backbones."
    )
    bootstrap: int = option(
        200,
        Interval(0, integer=True),
        help="Resamples of the groups (with replacement) counting how often each backbone comes out on "
        "top; 0 to skip.",
    )

    def __post_init__(self) -> None:
        validate(self)

    def check_relations(self) -> None:
        if self.rank_k not in self.knn_k and "knn" in self.probes:
            raise invalid("--rank-k", self.rank_k, f"one of --knn-k {','.join(map(str, self.knn_k))}")
