"""Classification heads on embeddings: scikit-learn estimators with a small torch model inside.

    head = MLPHead(hidden=(256,), augment="noise:0.1,mixup:0.4", seed=0).fit(X, y, validation=(Xv, yv))
    head.predict(X_new); head.predict_proba(X_new); head.threshold_; head.validation_

Both heads standardise their input (per-dimension mean and std of the training vectors, held as buffers
of the model), then `LinearHead` is one linear layer and `MLPHead` is (Linear -> norm -> GELU -> dropout)
per hidden layer and a linear output. Training is mini-batch AdamW (no weight decay on biases and norms)
on class-weighted cross-entropy or focal loss over soft labels (mixup makes them soft).

Parameters follow scikit-learn: `__init__` stores them, `fit`/`partial_fit` check them first and
raise `HeadsParameterError` (a `HeadsError` and a `ValueError`) naming the parameter and its valid values.
Every random draw (initial weights, shuffling, augmentation, dropout) comes from generators seeded by
`seed`; the global torch RNG is neither used nor touched.

Binary tasks: classes_[1] is the positive class; `predict` says positive when p(classes_[1]) >=
`threshold_` (0.5 until tuned on validation data to maximise the positive class's F1).

Training on data that does not fit in memory: `partial_fit(X, y, classes=...)` once per chunk (one
shuffled pass of mini-batch steps each), or `heads.train` from a store. Every way of training runs the
one loop of `heads.loop` (epochs of batches, validation scores, early stopping, the best epoch's weights).
`begin`/`step`, the streaming hooks heads.train used, still work for one release with a DeprecationWarning.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from embedstore.evaluate import split_scores
from embedstore.runtime import memory_available

from .augment import AugmentationPipeline, column_stats, parse_augmentations
from .errors import HeadsError
from .loop import ArrayBatches, EarlyStopping, Run, train_epoch, train_epochs  # noqa: F401 (EarlyStopping: its old home)
from .options import DEFAULTS, LOSSES, METRICS, HeadsParameterError, check_head_params  # noqa: F401 (their old home)

STATE_FORMAT = "embedstore.heads.state/1"
PREDICT_ROWS = 8192  # rows per forward pass in predict_proba, at most
PREDICT_BYTES = 256 * 2**20  # activations per forward pass in predict_proba, at most (wide heads: fewer rows)
NORMS = ("layer", "batch", None)


# -- parameter checks ---------------------------------------------------------------------------------


def _resolve_device(device: Any) -> torch.device:
    check_head_params({"device": device})
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise HeadsParameterError(f"device={device!r} but CUDA is not available; use device='auto' or 'cpu'")
    return resolved


def training_bytes(n_features: int, n_classes: int, hidden: tuple[int, ...], batch_size: int) -> int:
    """About how many bytes training a head takes: float32 weights, their gradients, AdamW's two moments
    and the best epoch's copy (5 x the parameters), and a batch's activations kept for the backward pass
    (outputs of linear, norm, GELU and dropout per hidden width, and their gradients)."""
    widths = [int(n_features), *(int(h) for h in hidden), int(n_classes)]
    parameters = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    activations = int(batch_size) * sum(int(h) for h in hidden) * 8
    return 4 * (5 * parameters + activations)


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


# -- the torch model ----------------------------------------------------------------------------------


class HeadModule(torch.nn.Module):
    """Standardise -> (Linear -> norm -> GELU -> dropout) per hidden width -> Linear to class logits.

    Dropout draws its masks from the generator passed to `forward` (no global RNG)."""

    mean: torch.Tensor  # standardisation buffers, registered in __init__
    scale: torch.Tensor

    def __init__(
        self, n_features: int, n_classes: int, hidden: tuple[int, ...] = (), dropout: float = 0.0, norm=None
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        widths = [n_features, *hidden]
        self.hidden = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False)
        )
        self.norms = torch.nn.ModuleList(_norm_layer(norm, width) for width in hidden)
        self.out = torch.nn.Linear(widths[-1], n_classes)
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = (x - self.mean) / self.scale
        for linear, norm in zip(self.hidden, self.norms, strict=True):
            z = F.gelu(norm(linear(z)))
            if self.training and self.dropout > 0:
                keep = torch.rand(z.shape, generator=generator, device=z.device) >= self.dropout
                z = z * keep.to(z.dtype) / (1.0 - self.dropout)
        return self.out(z)


def _norm_layer(norm: str | None, width: int) -> torch.nn.Module:
    if norm == "layer":
        return torch.nn.LayerNorm(width)
    if norm == "batch":
        return torch.nn.BatchNorm1d(width)
    return torch.nn.Identity()


def _initialise(module: HeadModule, generator: torch.Generator) -> None:
    """torch's default initialisation (uniform +-1/sqrt(fan_in) for weights and biases), drawn from
    `generator`; norms at identity; standardisation at identity."""
    with torch.no_grad():
        module.mean.zero_()
        module.scale.fill_(1.0)
        for linear in [*module.hidden, module.out]:
            bound = 1.0 / math.sqrt(linear.in_features)
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
        for norm in module.norms:
            reset = getattr(norm, "reset_parameters", None)
            if reset is not None:
                reset()


# -- thresholds ---------------------------------------------------------------------------------------


def f1_at(scores: np.ndarray, positive: np.ndarray, threshold: float) -> float:
    """F1 of the positive class when `scores >= threshold` are called positive (0 without any)."""
    predicted = np.asarray(scores, dtype=np.float64) >= threshold
    positive = np.asarray(positive, dtype=bool)
    tp = int((predicted & positive).sum())
    denominator = int(predicted.sum()) + int(positive.sum())
    return 2 * tp / denominator if denominator else 0.0


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising the positive class's F1 of `scores >= threshold`; the threshold lies
    midway between the last score called positive and the next lower one (the highest such threshold
    on ties of F1). Without positives: (0.5, F1 at 0.5)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    total = int(positive.sum())
    if total == 0 or len(scores) == 0:
        return 0.5, f1_at(scores, positive, 0.5)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    tp = np.cumsum(positive[order])
    called = np.arange(1, len(ranked) + 1)
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # last index of each group of ties
    f1 = 2 * tp[ends] / (called[ends] + total)
    best = ends[int(np.argmax(f1))]
    threshold = ranked[best] if best == len(ranked) - 1 else (ranked[best] + ranked[best + 1]) / 2
    return float(threshold), float(f1.max())


# -- the estimators -----------------------------------------------------------------------------------


class BaseHead(ClassifierMixin, BaseEstimator):
    """What LinearHead and MLPHead share; subclasses declare their parameters in `__init__`."""

    kind = ""

    # Architecture; MLPHead overrides these with parameters.
    def _architecture(self) -> dict[str, Any]:
        return {"hidden": (), "dropout": 0.0, "norm": None}

    # -- parameters ---------------------------------------------------------------------------------

    def check_params(self) -> AugmentationPipeline:
        """Check every parameter now (fit/partial_fit do it first anyway); the parsed `augment`
        pipeline. For callers that want to fail before reading any data."""
        return self._check_params()

    def _check_params(self) -> AugmentationPipeline:
        """Every parameter by its `heads.options.HeadOptions` declaration; the parsed augmentation."""
        check_head_params(self.get_params(deep=False))
        _resolve_device(self.device)
        try:
            return parse_augmentations(self.augment)
        except HeadsError as error:
            raise HeadsParameterError(f"augment={self.augment!r}: {error}") from None

    # -- inputs -------------------------------------------------------------------------------------

    def _check_X(self, X: Any, reset: bool) -> np.ndarray:
        X = check_array(X, dtype=np.float32, order="C")
        if not reset and X.shape[1] != self.n_features_in_:
            raise HeadsParameterError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X

    def _check_y(self, y: Any, n: int) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if len(y) != n:
            raise HeadsParameterError(f"X has {n} rows but y has {len(y)} labels; give one label per row")
        return y

    def _codes(self, y: np.ndarray) -> np.ndarray:
        """Codes of labels `y` in classes_; HeadsParameterError naming labels it does not know."""
        index = {label: code for code, label in enumerate(self.classes_.tolist())}
        try:
            return np.fromiter((index[label] for label in y.tolist()), dtype=np.int64, count=len(y))
        except KeyError as error:
            raise HeadsParameterError(
                f"label {error.args[0]!r} is not one of the head's classes {self.classes_.tolist()}"
            ) from None

    # -- building -----------------------------------------------------------------------------------

    def _seeds(self) -> list[int]:
        return [int(s) for s in np.random.SeedSequence(int(self.seed)).generate_state(3)]

    def check_memory(self, n_features: int, n_classes: int) -> None:
        """HeadsParameterError, before anything is allocated, when training this head on `n_features`
        inputs and `n_classes` classes would need more memory than its device has free (an estimate:
        `training_bytes`), instead of the process being killed for memory."""
        hidden = self._architecture()["hidden"]
        needed = training_bytes(n_features, n_classes, hidden, self.batch_size)
        device = _resolve_device(self.device)
        free = memory_available(device)
        if free is None or needed <= free:
            return
        shape = " -> ".join(str(w) for w in (n_features, *hidden, n_classes))
        raise HeadsParameterError(
            f"hidden={tuple(hidden)} (--hidden): a {shape} head needs about {_gib(needed)} to train "
            f"(weights, gradients, optimiser state, a batch of {self.batch_size}), more than the "
            f"{_gib(free)} free on {device.type}; use smaller hidden widths (e.g. 256) or batch_size"
        )

    def _build_module(self, classes: np.ndarray, n_features: int) -> None:
        """A freshly initialised model for `classes` on the resolved device; classes_, threshold_ reset."""
        self.check_memory(int(n_features), len(classes))
        self.device_ = _resolve_device(self.device)
        self.classes_ = classes
        self.n_features_in_ = int(n_features)
        self.threshold_ = 0.5
        with torch.device("meta"):
            module = HeadModule(int(n_features), len(classes), **self._architecture())
        module = module.to_empty(device="cpu")
        _initialise(module, torch.Generator().manual_seed(self._seeds()[0]))
        self.module_ = module.to(self.device_)

    def _prepare_training(
        self,
        pipeline: AugmentationPipeline,
        counts: np.ndarray,
        sample: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        """Optimiser, generators, class weights and the fitted augmentation for training the model."""
        decay = [p for p in self.module_.parameters() if p.ndim >= 2]
        other = [p for p in self.module_.parameters() if p.ndim < 2]
        self._optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(self.weight_decay)},
                {"params": other, "weight_decay": 0.0},
            ],
            lr=float(self.lr),
        )
        seeds = self._seeds()
        self._shuffle_generator = torch.Generator().manual_seed(seeds[1])
        self._generator = torch.Generator(device=self.device_).manual_seed(seeds[2])
        self.class_counts_ = np.asarray(counts, dtype=np.int64)
        self._weights = torch.as_tensor(self._class_weights(), dtype=torch.float32, device=self.device_)
        if pipeline.needs_fit:
            if sample is None:
                raise HeadsParameterError(
                    f"augment={self.augment!r} needs training statistics: "
                    "pass augmentation_sample=(x, y_codes) to begin"
                )
            pipeline.fit(sample[0], sample[1], len(self.classes_), class_counts=self.class_counts_)
        self._pipeline = pipeline

    def _class_weights(self) -> np.ndarray:
        counts = self.class_counts_.astype(np.float64)
        n_classes = len(self.classes_)
        if self.class_weight is None:
            return np.ones(n_classes)
        if isinstance(self.class_weight, Mapping):
            labels = self.classes_.tolist()
            unknown = [k for k in self.class_weight if k not in labels]
            if unknown:
                raise HeadsParameterError(
                    f"class_weight names labels {unknown} that are not classes {labels}"
                )
            return np.array([float(self.class_weight.get(label, 1.0)) for label in labels])
        total = counts.sum()
        return np.divide(total, n_classes * counts, out=np.ones(n_classes), where=counts > 0)

    def _standardise_from(self, x: np.ndarray) -> None:
        mean, std = column_stats(x)  # numpy's mean and std, without an (n, d) float64 copy of x
        std = np.where(std > 1e-6, std, 1.0)
        with torch.no_grad():
            self.module_.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
            self.module_.scale.copy_(torch.from_numpy(std.astype(np.float32)))

    # -- training -----------------------------------------------------------------------------------

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Class-weighted (focal) cross-entropy of soft targets, normalised by the targets' total weight."""
        log_p = F.log_softmax(logits, dim=1)
        if self.loss == "focal":
            log_p = (1 - log_p.exp()).pow(float(self.focal_gamma)) * log_p
        weighted = target * self._weights
        return -(weighted * log_p).sum() / weighted.sum().clamp_min(1e-12)

    def _train_step(self, x: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        target = F.one_hot(codes, len(self.classes_)).to(torch.float32)
        if self._pipeline.steps:
            x, target = self._pipeline(x, target, self._generator)
        if len(x) < 2 and any(isinstance(n, torch.nn.BatchNorm1d) for n in self.module_.norms):
            return None  # batch norm cannot train on one row
        self.module_.train()
        loss = self._loss(self.module_(x, self._generator), target)
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        return loss.detach(), len(x)

    def _batches(self, X: np.ndarray, codes: np.ndarray) -> ArrayBatches:
        """X, codes in shuffled batches of `batch_size` (the head's shuffle generator)."""
        return ArrayBatches(X, codes, self.batch_size, self._shuffle_generator)

    def _keep_best(self, run: Run) -> dict[str, float]:
        """Load the best epoch's weights (`best_epoch_`); binary: tune `threshold_` on that epoch's
        validation probabilities and return threshold, f1_at_threshold and f1_at_0.5 (else {})."""
        best = run.best
        assert best is not None and run.best_state is not None, "a run with validation keeps a best epoch"
        self.load_state_dict(run.best_state)
        self.best_epoch_ = best.number
        if len(self.classes_) != 2 or best.probabilities is None or best.codes is None:
            return {}
        self.tune_threshold(best.probabilities, best.codes)
        scores, positive = best.probabilities[:, 1], best.codes == 1
        return {
            "threshold": float(self.threshold_),
            "f1_at_threshold": f1_at(scores, positive, self.threshold_),
            "f1_at_0.5": f1_at(scores, positive, 0.5),
        }

    def fit(self, X: Any, y: Any, *, validation: tuple[Any, Any] | None = None) -> BaseHead:
        """Train from scratch on in-memory X (n, d), labels y (n,): mini-batch AdamW over `epochs` with
        the `augment` steps. With `validation=(X_val, y_val)`: stop early on `early_stopping` after
        `patience` epochs without improvement, keep the best epoch's weights, and (binary) tune
        `threshold_` for the F1 of classes_[1]; the scores at the best epoch go to `validation_`."""
        pipeline = self._check_params()
        X = self._check_X(X, reset=True)
        y = self._check_y(y, len(X))
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise HeadsParameterError(f"y has one class ({classes[0]!r}); a head needs at least 2 classes")
        self._build_module(classes, X.shape[1])
        if validation is not None:
            validation_X = self._check_X(validation[0], reset=False)
            validation_codes = self._codes(self._check_y(validation[1], len(validation_X)))
            if self.early_stopping == "auroc" and len(np.unique(validation_codes)) < 2:
                raise HeadsParameterError(
                    "validation labels hold one class, so early_stopping='auroc' is undefined; "
                    "give a validation set with two classes or early_stopping='loss'"
                )
        codes = codes.astype(np.int64).ravel()
        self._standardise_from(X)
        self._prepare_training(pipeline, np.bincount(codes, minlength=len(classes)), (X, codes))
        self.validation_ = {}
        checking = None if validation is None else ArrayBatches(validation_X, validation_codes)
        run = train_epochs(self, self._batches(X, codes), checking, epochs=self.epochs)
        self.history_ = [
            {
                "epoch": epoch.number,
                "train_loss": epoch.train_loss,
                **{f"validation_{k}": v for k, v in (epoch.scores or {}).items()},
            }
            for epoch in run.epochs
        ]
        self.n_iter_ = self.best_epoch_ = len(run.epochs)
        if run.best is not None:
            threshold = self._keep_best(run)
            self.validation_ = {
                "epoch": self.best_epoch_,
                "metric": self.early_stopping,
                **(run.best.scores or {}),
            }
            if threshold:
                self.validation_.update({"positive_class": self.classes_.tolist()[1], **threshold})
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> BaseHead:
        """One shuffled pass of mini-batch steps over X, y (scikit-learn semantics). The first call needs
        `classes` (every label) and takes the input standardisation, augmentation statistics and class
        counts from its X, y; later calls add their counts (class_weight='balanced' follows them)."""
        first = not hasattr(self, "module_")
        if first:
            pipeline = self._check_params()
            if classes is None:
                raise HeadsParameterError("classes must list every label on the first call to partial_fit")
            X = self._check_X(X, reset=True)
            y = self._check_y(y, len(X))
            labels = np.unique(column_or_1d(classes))
            if len(labels) < 2:
                raise HeadsParameterError(f"classes must hold at least 2 labels, got {labels.tolist()}")
            self._build_module(labels, X.shape[1])
            codes = self._codes(y)
            self._standardise_from(X)
            self._prepare_training(pipeline, np.bincount(codes, minlength=len(labels)), (X, codes))
            self.history_, self.validation_ = [], {}
        else:
            X = self._check_X(X, reset=False)
            y = self._check_y(y, len(X))
            if classes is not None and not np.array_equal(np.unique(column_or_1d(classes)), self.classes_):
                raise HeadsParameterError(
                    f"classes={list(classes)} differ from those of the first call {self.classes_.tolist()}"
                )
            codes = self._codes(y)
            if not hasattr(self, "_optimizer"):
                self._prepare_training(
                    self._check_params(), np.zeros(len(self.classes_), np.int64), (X, codes)
                )
            self.class_counts_ = self.class_counts_ + np.bincount(codes, minlength=len(self.classes_))
            self._weights = torch.as_tensor(self._class_weights(), dtype=torch.float32, device=self.device_)
        loss = train_epoch(self, self._batches(X, codes))
        self.n_iter_ = len(self.history_) + 1
        self.history_.append({"epoch": self.n_iter_, "train_loss": loss})
        return self

    # -- streaming hooks (heads.train drives them; partial_fit is the public incremental API) ----------

    def begin(self, *args: Any, **kwargs: Any) -> BaseHead:
        """Deprecated: the streaming hook heads.train uses; call `partial_fit` (or heads.train)."""
        _deprecated("begin")
        return self._begin(*args, **kwargs)

    def step(self, x: np.ndarray, y_codes: np.ndarray) -> float:
        """Deprecated: the streaming hook heads.train uses; call `partial_fit` (or heads.train)."""
        _deprecated("step")
        return self._step(x, y_codes)

    def _begin(
        self,
        classes: Any,
        n_features: int,
        class_counts: Mapping[Any, int],
        augmentation_sample: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> BaseHead:
        """Start streamed training: check parameters, build a fresh model for `classes` (labels in code
        order: y_codes index them; binary: classes[1] is positive) and its optimiser, class weights from
        `class_counts` (label -> training count), input standardisation and augmentation statistics from
        `augmentation_sample=(x, y_codes)`, a bounded sample of training vectors (without one the input
        is not standardised and noise/smote are refused)."""
        pipeline = self._check_params()
        labels = np.asarray(list(classes))
        if len(labels) < 2 or len(np.unique(labels)) != len(labels):
            raise HeadsParameterError(f"classes must be at least 2 distinct labels, got {labels.tolist()}")
        if isinstance(n_features, bool) or not isinstance(n_features, numbers.Integral) or n_features < 1:
            raise HeadsParameterError(f"n_features must be an integer >= 1, got {n_features!r}")
        unknown = [k for k in class_counts if k not in labels.tolist()]
        if unknown:
            raise HeadsParameterError(
                f"class_counts names labels {unknown} that are not classes {labels.tolist()}"
            )
        counts = np.array([int(class_counts.get(label, 0)) for label in labels.tolist()], dtype=np.int64)
        self._build_module(labels, n_features)
        sample = None
        if augmentation_sample is not None:
            x = self._check_X(augmentation_sample[0], reset=False)
            codes = np.asarray(augmentation_sample[1], dtype=np.int64).ravel()
            if len(codes) != len(x) or (len(codes) and (codes.min() < 0 or codes.max() >= len(labels))):
                raise HeadsParameterError(
                    f"augmentation_sample needs one code in 0..{len(labels) - 1} per row of x"
                )
            self._standardise_from(x)
            sample = (x, codes)
        self._prepare_training(pipeline, counts, sample)
        self.history_, self.validation_ = [], {}
        return self

    def _step(self, x: np.ndarray, y_codes: np.ndarray) -> float:
        """One optimiser step on a batch x (b, d), codes y_codes (b,) in classes_ order (augmented first);
        the batch's training loss (NaN when skipped: one row with batch norm)."""
        if not hasattr(self, "_optimizer"):
            raise HeadsError("call begin(...) (or fit) before step")
        x = np.asarray(x, dtype=np.float32)
        codes = np.asarray(y_codes, dtype=np.int64).ravel()
        if x.ndim != 2 or x.shape[1] != self.n_features_in_ or len(codes) != len(x):
            raise HeadsParameterError(
                f"step needs x (b, {self.n_features_in_}) and y_codes (b,), got {x.shape} and {codes.shape}"
            )
        if len(codes) and (codes.min() < 0 or codes.max() >= len(self.classes_)):
            raise HeadsParameterError(f"y_codes must lie in 0..{len(self.classes_) - 1}")
        done = self._train_step(
            torch.from_numpy(x).to(self.device_), torch.from_numpy(codes).to(self.device_)
        )
        return math.nan if done is None else float(done[0])

    def validation_scores(self, probabilities: np.ndarray, y_codes: np.ndarray) -> dict[str, float]:
        """Scores of (n, C) probabilities against codes: loss (the training criterion without
        augmentation), balanced_accuracy, macro_f1, auroc and f1:<code> (embedstore.probe.metrics)."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        codes = np.asarray(y_codes, dtype=np.int64).ravel()
        weights = self._class_weights()[codes]
        p_true = np.clip(probabilities[np.arange(len(codes)), codes], 1e-12, 1.0)
        term = np.log(p_true)
        if self.loss == "focal":
            term = (1 - p_true) ** float(self.focal_gamma) * term
        loss = float(-(weights * term).sum() / max(weights.sum(), 1e-12))
        return {"loss": loss, **split_scores(codes, probabilities, len(self.classes_))}

    def tune_threshold(self, probabilities: np.ndarray, y_codes: np.ndarray) -> float:
        """Binary only: set `threshold_` to the one maximising the F1 of classes_[1] on these validation
        probabilities ((n, 2), or (n,) of the positive class) and codes; returns it."""
        check_is_fitted(self, "module_")
        if len(self.classes_) != 2:
            raise HeadsError(f"tune_threshold is for binary heads; this one has {len(self.classes_)} classes")
        probabilities = np.asarray(probabilities)
        scores = probabilities[:, 1] if probabilities.ndim == 2 else probabilities
        self.threshold_, _ = best_f1_threshold(scores, np.asarray(y_codes).ravel() == 1)
        return self.threshold_

    def state_dict(self) -> dict[str, Any]:
        """Weights (CPU copies) + classes + n_features + threshold (+ training class counts): enough to
        predict and to score validation data."""
        check_is_fitted(self, "module_")
        counts = getattr(self, "class_counts_", None)
        return {
            "module": {k: v.detach().to("cpu", copy=True) for k, v in self.module_.state_dict().items()},
            "classes": self.classes_.tolist(),
            "n_features": int(self.n_features_in_),
            "threshold": float(self.threshold_),
            "class_counts": None if counts is None else [int(c) for c in counts],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> BaseHead:
        """Weights, classes and threshold from `state_dict()`; builds the model when the head has none
        (or one for other classes or features), keeping the optimiser when it matches."""
        classes = np.asarray(state["classes"])
        same = (
            hasattr(self, "module_")
            and np.array_equal(classes, self.classes_)
            and int(state["n_features"]) == self.n_features_in_
        )
        if not same:
            self._check_params()
            self._build_module(classes, int(state["n_features"]))
            for name in ("_optimizer", "_pipeline", "_generator", "_shuffle_generator"):
                self.__dict__.pop(name, None)
        self.module_.load_state_dict(state["module"])
        self.threshold_ = float(state["threshold"])
        if state.get("class_counts") is not None:
            self.class_counts_ = np.asarray(state["class_counts"], dtype=np.int64)
        return self

    def to_state(self) -> dict[str, Any]:
        """Parameters + weights + history + validation scores, of plain types and tensors only
        (torch.save it; torch.load(weights_only=True) reads it); `from_state` rebuilds the head."""
        return {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "params": _plain(self.get_params(deep=False)),
            "state": self.state_dict(),
            "history": _plain(getattr(self, "history_", [])),
            "validation": _plain(getattr(self, "validation_", {})),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BaseHead:
        """The head `to_state` described (BaseHead.from_state picks LinearHead or MLPHead by kind)."""
        if state.get("format") != STATE_FORMAT:
            raise HeadsError(f"not a head state (format {state.get('format')!r}, expected {STATE_FORMAT!r})")
        kinds: dict[str | None, type[BaseHead]] = {"linear": LinearHead, "mlp": MLPHead}
        target = kinds.get(state.get("kind"))
        if target is None:
            known = ", ".join(str(kind) for kind in kinds)
            raise HeadsError(f"unknown head kind {state.get('kind')!r}; known: {known}")
        if cls is not BaseHead and cls is not target:
            raise HeadsError(
                f"the state holds a {target.__name__}; load it with {target.__name__}.from_state"
            )
        head = target(**state["params"])
        head.load_state_dict(state["state"])
        head.history_ = list(state.get("history", []))
        head.validation_ = dict(state.get("validation", {}))
        return head

    # -- prediction ---------------------------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) float32 class probabilities, columns in classes_ order."""
        check_is_fitted(self, "module_")
        X = self._check_X(X, reset=False)
        self.module_.eval()
        out = np.empty((len(X), len(self.classes_)), dtype=np.float32)
        widest = max((X.shape[1], *self._architecture()["hidden"], len(self.classes_)))
        rows = max(1, min(PREDICT_ROWS, PREDICT_BYTES // (3 * 4 * widest)))  # ~3 live float32 activations
        with torch.no_grad():
            for start in range(0, len(X), rows):
                chunk = torch.from_numpy(X[start : start + rows]).to(self.device_)
                out[start : start + len(chunk)] = torch.softmax(self.module_(chunk), dim=1).cpu().numpy()
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Labels from classes_: binary by p(classes_[1]) >= threshold_, otherwise the most probable."""
        probabilities = self.predict_proba(X)
        if len(self.classes_) == 2:
            positive = probabilities[:, 1].astype(np.float64) >= self.threshold_  # as tuned: in float64
            return self.classes_[positive.astype(np.int64)]
        return self.classes_[probabilities.argmax(axis=1)]


def _deprecated(name: str) -> None:
    warnings.warn(
        f"BaseHead.{name} is deprecated and will be removed in the next release: train incrementally "
        "with partial_fit, or from a store with heads.train",
        DeprecationWarning,
        stacklevel=3,
    )


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values (what torch.load(weights_only=True) accepts)."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return value


class LinearHead(BaseHead):
    """One linear layer on standardised embeddings (multinomial logistic regression trained by AdamW)."""

    kind = "linear"

    def __init__(
        self,
        *,
        lr: float = DEFAULTS["lr"],
        weight_decay: float = DEFAULTS["weight_decay"],
        epochs: int = DEFAULTS["epochs"],
        batch_size: int = DEFAULTS["batch_size"],
        class_weight: str | dict | None = DEFAULTS["class_weight"],
        loss: str = DEFAULTS["loss"],
        focal_gamma: float = DEFAULTS["focal_gamma"],
        augment: str = DEFAULTS["augment"],
        patience: int | None = DEFAULTS["patience"],
        early_stopping: str = DEFAULTS["early_stopping"],
        seed: int = DEFAULTS["seed"],
        device: str = DEFAULTS["device"],
    ) -> None:
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.augment = augment
        self.patience = patience
        self.early_stopping = early_stopping
        self.seed = seed
        self.device = device


class MLPHead(BaseHead):
    """Hidden layers (Linear -> norm -> GELU -> dropout) then a linear output, on standardised input."""

    kind = "mlp"

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = DEFAULTS["hidden"],
        dropout: float = DEFAULTS["dropout"],
        norm: str | None = DEFAULTS["norm"],
        lr: float = DEFAULTS["lr"],
        weight_decay: float = DEFAULTS["weight_decay"],
        epochs: int = DEFAULTS["epochs"],
        batch_size: int = DEFAULTS["batch_size"],
        class_weight: str | dict | None = DEFAULTS["class_weight"],
        loss: str = DEFAULTS["loss"],
        focal_gamma: float = DEFAULTS["focal_gamma"],
        augment: str = DEFAULTS["augment"],
        patience: int | None = DEFAULTS["patience"],
        early_stopping: str = DEFAULTS["early_stopping"],
        seed: int = DEFAULTS["seed"],
        device: str = DEFAULTS["device"],
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.norm = norm
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.augment = augment
        self.patience = patience
        self.early_stopping = early_stopping
        self.seed = seed
        self.device = device

    def _architecture(self) -> dict[str, Any]:
        return {
            "hidden": tuple(int(h) for h in self.hidden),
            "dropout": float(self.dropout),
            "norm": self.norm,
        }
