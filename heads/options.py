"""Head and training parameters, declared once with embedstore's `option` constraints.

`HeadOptions` holds an estimator's parameters (scikit-learn names) and their defaults: `LinearHead` and
`MLPHead` take their defaults from it, `check_head_params` checks an estimator's parameters by its
declarations, and `train-head` takes its flags, defaults and help from it (`cli.options.from_options`).
`TrainOptions` holds what `heads.train` and `heads.tune` add around the estimator (head kind, split);
`PredictOptions` and `HeatmapOptions` what `predict` and `heatmap` take (their flags come from them too).
Building any of them runs `validate` ("--flag VALUE must be ..."). Nothing heavy is imported here.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from dataclasses import dataclass
from typing import Any

from embedstore.core.errors import EmbedstoreError
from embedstore.core.validation import Constraint, Flag, Integers, Interval, Name, OneOf, option, validate

from .augment_spec import HELP, parse_spec
from .errors import HeadsError

HEAD_KINDS = ("linear", "mlp")
DEFAULT_HEAD = "linear"  # heads.train, heads.tune and train-head (the README documents the CLI's)
METRICS = ("auroc", "balanced_accuracy", "macro_f1", "loss")
LOSSES = ("ce", "focal")
MLP_PARAMS = ("hidden", "dropout", "norm")  # what LinearHead does not take
HEATMAP_STYLES = ("fill", "contour")


class HeadsParameterError(HeadsError, ValueError):
    """A bad parameter or input of a head: one line in the CLI (HeadsError), a ValueError to scikit-learn."""


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (a numpy int is an integer)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str | bytes) else value


@dataclasses.dataclass(frozen=True)
class Choice(OneOf):
    """One of `choices`, described as a list ("one of a, b") or in words ("'a' or 'b'")."""

    words: bool = False

    def describe(self) -> str:
        if not self.words:
            return "one of " + ", ".join(self.choices)
        names = [repr(c) for c in self.choices]
        return ", ".join(names[:-1]) + " or " + names[-1]


@dataclasses.dataclass(frozen=True)
class Integer(Interval):
    """An integer (a numpy integer too) in a range."""

    integer: bool = True

    def coerce(self, value: Any) -> Any:
        return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


@dataclasses.dataclass(frozen=True)
class Fraction(Interval):
    """A number in [0, 1)."""

    low: float | None = 0.0
    high: float | None = 1.0

    def accepts(self, value: Any) -> bool:
        return super().accepts(value) and value < 1

    def describe(self) -> str:
        return "a number in [0, 1)"


@dataclasses.dataclass(frozen=True)
class Widths(Integers):
    """Hidden layer widths: a non-empty tuple of integers >= 1, in order, or "512,128"."""

    def coerce(self, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",")]
            return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else value
        if isinstance(value, list | tuple):
            return tuple(Integer().coerce(v) for v in value)
        return value

    def accepts(self, value: Any) -> bool:
        return (
            isinstance(value, tuple)
            and len(value) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        )

    def describe(self) -> str:
        return "a non-empty tuple of integers >= 1, e.g. (256,)"

    def invalid_example(self) -> Any:
        return "a,b"


@dataclasses.dataclass(frozen=True)
class ClassWeight(Constraint):
    def accepts(self, value: Any) -> bool:
        if value is None or value == "balanced":
            return True
        if isinstance(value, dict):
            return all(Interval(0, open_low=True).accepts(_plain(w)) for w in value.values())
        return False

    def describe(self) -> str:
        return "'balanced', None or a dict label -> weight > 0"

    def invalid_example(self) -> Any:
        return "even"


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclasses.dataclass(frozen=True)
class Device(Constraint):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and _DEVICE.fullmatch(value) is not None

    def describe(self) -> str:
        return "'auto', 'cpu', 'cuda' or 'cuda:N'"

    def invalid_example(self) -> Any:
        return "tpu"


@dataclasses.dataclass(frozen=True)
class AugmentSpec(Constraint):
    """An augmentation spec in the `--aug` grammar (heads.augment_spec: the one parser)."""

    def accepts(self, value: Any) -> bool:
        return self.problem(value) is None

    @staticmethod
    def problem(value: Any) -> str | None:
        try:
            parse_spec(value)
        except HeadsError as error:
            return str(error)
        return None

    def describe(self) -> str:
        return HELP

    def refusal(self, value: Any) -> str:
        return f"an augmentation spec: {self.problem(value) or self.describe()}"

    def invalid_example(self) -> Any:
        return "nois:0.1"


@dataclass
class HeadOptions:
    """An estimator's parameters (LinearHead takes all but hidden, dropout and norm)."""

    hidden: tuple[int, ...] = option(
        (256,), Widths(), help="MLP hidden layer widths, e.g. 256 or 512,128.", metavar="N[,N]"
    )
    dropout: float = option(0.2, Fraction(), help="MLP dropout.")
    norm: str | None = option(
        "layer", Choice(("layer", "batch"), words=True), optional=True, cli=False, help="MLP norm layer."
    )
    lr: float = option(1e-3, Interval(0, open_low=True), help="AdamW learning rate.")
    weight_decay: float = option(1e-4, Interval(0), help="AdamW weight decay.")
    epochs: int = option(30, Integer(1), help="Most epochs (early stopping ends sooner).")
    batch_size: int = option(256, Integer(1), help="Training batch size.")
    class_weight: Any = option("balanced", ClassWeight(), cli=False, help="Class weights.")
    loss: str = option("ce", Choice(LOSSES, words=True), help="Cross-entropy or focal loss.")
    focal_gamma: float = option(2.0, Interval(0), cli=False, help="Focal loss gamma.")
    augment: str = option("", AugmentSpec(), flag="--aug", help=HELP, metavar="SPEC")
    patience: int | None = option(5, Integer(1), optional=True, cli=False, help="Epochs without gain.")
    early_stopping: str = option("auroc", Choice(METRICS), cli=False, help="Metric to stop early on.")
    seed: int = option(0, Integer(0), help="Seed of the split, weights, shuffling and augmentation.")
    device: str = option("auto", Device(), cli=False, help="Device to train on.")

    def __post_init__(self) -> None:
        validate(self)

    def check_relations(self) -> None:
        if self.norm == "batch" and self.batch_size < 2:
            raise HeadsError(f"--batch-size {self.batch_size} must be >= 2 with norm='batch'")


@dataclass
class TrainOptions:
    """What training from the store adds around the estimator: the head kind and the split."""

    head: str = option(DEFAULT_HEAD, Choice(HEAD_KINDS), help="Head kind.")
    group_by: str | None = option(
        None,
        Name(),
        optional=True,
        metavar="COLUMN",
        help="Group column for the split [default: patient/slide/image].",
    )
    validation: float = option(0.2, Interval(0, 0.5, open_low=True), help="Share of groups held out.")
    overwrite: bool = option(False, Flag(), help="Replace a head of the same name.")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class PredictOptions:
    """What `predict` takes besides the head: its progress bar, and what its --export writes."""

    top: int = option(100, Integer(1), help="Rows in --export.")
    class_name: str | None = option(
        None,
        Name(),
        optional=True,
        flag="--class",
        metavar="CLASS",
        help="Rank --export by this class [default: positive].",
    )
    progress: bool = option(True, Flag(), help="Show a progress bar.")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class HeatmapOptions:
    """How `heatmap` draws a head's scores over a slide."""

    class_name: str | None = option(
        None, Name(), optional=True, flag="--class", metavar="CLASS", help="Class whose probability to draw."
    )
    alpha: float = option(
        0.75,
        Interval(0, 1),
        help="Overlay opacity at score 1; it falls with the score, so low-scoring tissue stays visible.",
    )
    style: str = option(
        "fill", Choice(HEATMAP_STYLES), help="fill: colour the tiles; contour: outline score levels only."
    )
    side_by_side: bool = option(False, Flag(), help="Put the plain thumbnail left of the heatmap.")

    def __post_init__(self) -> None:
        validate(self)


DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(HeadOptions)}
TRAIN_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
PREDICT_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(PredictOptions)}
HEATMAP_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(HeatmapOptions)}
_FIELDS = {f.name: f for f in dataclasses.fields(HeadOptions)}


def check_head_params(params: dict[str, Any]) -> None:
    """An estimator's parameters by HeadOptions' declarations, in scikit-learn's wording: a
    HeadsParameterError "name must be ..., got VALUE" (the value is left as given). The augmentation
    spec is parsed by the caller (its own error names the grammar)."""
    for name, value in params.items():
        field = _FIELDS.get(name)
        if field is None or name == "augment":
            continue
        constraint = field.metadata["constraint"]
        if value is None and field.metadata.get("optional"):
            continue
        coerced = constraint.coerce(_plain(value))
        if not constraint.accepts(coerced):
            must = constraint.refusal(coerced)
            if field.metadata.get("optional") and not isinstance(constraint, Choice):
                must += " or None"
            elif field.metadata.get("optional"):
                must = must.replace(" or ", ", ") + " or None"
            raise HeadsParameterError(f"{name} must be {must}, got {value!r}")
    if params.get("norm") == "batch" and _plain(params.get("batch_size", 2)) < 2:
        raise HeadsParameterError(
            f"batch_size must be an integer >= 2 with norm='batch', got {params['batch_size']!r}"
        )


def options_error(error: EmbedstoreError) -> HeadsError:
    """An options error as heads' one-line error."""
    return error if isinstance(error, HeadsError) else HeadsError(str(error))
