"""What `index` and `search` can be told. A leaf: importable without FAISS (for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import EmbedstoreError
from ..core.validation import FileName, Flag, Interval, Name, OneOf, SqlExpression, option, validate
from .configs import BACKENDS, KINDS, METRICS

FUSIONS = ("mean", "rrf")
CENTRINGS = ("pool", "index", "none")  # see centring.py


@dataclass
class IndexOptions:
    """How to build an index. The kind's own settings: pass `config=` (see `embedstore.search.configs`)."""

    kind: str = option("auto", OneOf(KINDS), help="Index kind; auto: exact below 100k vectors, else ivfpq.")
    metric: str = option("cosine", OneOf(METRICS), help="Similarity.")
    center: bool = option(
        True,
        Flag(),
        help="Store vectors centred on the table's mean (cosine). Searches re-centre on the searched "
        "tiles' mean by default either way (search --center).",
    )
    center_on: str | None = option(
        None,
        SqlExpression(),
        optional=True,
        help="Centre on the mean of the tiles this SQL expression selects (e.g. \"dataset = 'pcam'\") "
        "instead of the whole table's; `search --where` with the same expression then needs no re-centring.",
    )
    backend: str = option("faiss", OneOf(BACKENDS), help="faiss, or LanceDB's own vector index.")
    name: str | None = option(
        None,
        FileName(),
        optional=True,
        help="Index name, a folder inside the store [default: the kind, plus -lancedb / -l2].",
    )
    device: str = option("auto", OneOf(("auto", "cpu", "cuda")), help="auto: FAISS on GPU when present.")

    def __post_init__(self) -> None:
        validate(self)
        if self.center_on is not None and (not self.center or self.metric != "cosine"):
            raise EmbedstoreError(
                "--center-on centres cosine vectors: drop it, or drop --no-center / --metric l2"
            )

    def index_name(self, kind: str | None = None) -> str:
        """The name given, or one made of the kind (`kind` overrides the option), backend and metric."""
        if self.name:
            return self.name
        kind = kind or self.kind
        suffix = ("-lancedb" if self.backend == "lancedb" and kind != "lancedb" else "") + (
            "-l2" if self.metric == "l2" else ""
        )
        return f"{kind}{suffix}" if (kind, suffix) != ("auto", "") else "auto"


@dataclass
class SearchOptions:
    """How to search: how many hits, how to fuse several positives, what to exclude."""

    k: int = option(50, Interval(1, integer=True), flag="-k", help="Hits to return.")
    fusion: str = option(
        "mean",
        OneOf(FUSIONS),
        help="Several positives: mean (one query, their mean) or rrf (reciprocal-rank fusion).",
    )
    negative_weight: float = option(
        1.0, Interval(0.0), help="How hard negatives push candidates away (score - w * similarity to one)."
    )
    exclude_query_slides: bool = option(False, Flag(), help="Leave out tiles of the query tiles' slides.")
    exclude_task: str | None = option(
        None, Name(), optional=True, help="Leave out tiles already labelled for this task."
    )
    where: str | None = option(
        None,
        SqlExpression(),
        optional=True,
        help="One SQL expression over tile columns, e.g. \"dataset = 'cohort2'\".",
    )
    index: str | None = option(
        None, FileName(), optional=True, help="Index name [default: the only one, or auto]."
    )
    update: bool = option(
        True, Flag(), help="Add rows embedded since the index was built (otherwise refuse a stale index)."
    )
    center: str = option(
        "pool",
        OneOf(CENTRINGS),
        help="Cosine centred on: pool (the mean of the tiles the filters leave; suits mixed stores), "
        "index (what the index was built centred on), none (raw cosine). Not for l2.",
    )
    drop_outliers: bool = option(
        False,
        Flag(),
        help="Search without the positives the query check calls outliers (ranked below half of the data "
        "by the other positives; see embedstore.search.query_check).",
    )

    def __post_init__(self) -> None:
        validate(self)
