"""The three probes, on arrays: class probabilities for test vectors from labelled training vectors.

Labels are integer codes 0..C-1; every function returns (n_test, C) probabilities.

- kNN: cosine on the raw vectors (scikit-learn's `KNeighborsClassifier(metric="cosine")`), every k from
  one FAISS search; the probability of a class is its share of the k votes.
- prototype: nearest class mean after centring on the training mean, softmax over cosine similarities.
- linear: standardised, L2-regularised logistic regression (binomial for two classes, multinomial
  above: scikit-learn's objective, classes weighted to balance), its strength C chosen by inner
  group-aware cross-validation on validation log-loss, then refit on all training vectors.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit

from ..search.space import VectorSpace
from ..search.tuning import exact_neighbours

PROTOTYPE_TEMPERATURE = 0.1  # softmax over cosines in [-1, 1]; only AUROC sees it (rank within a class)
C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 10))  # scikit-learn's LogisticRegressionCV default
PATH_PATIENCE = 2  # stop the C path after this many steps without a better validation loss
MAX_ITER = 1000  # as the scikit-learn pipeline it is compared with; weak regularisation needs many
PARALLEL_WORK = 2_000_000  # multiply-adds per product from which the objective's BLAS uses every thread
TOLERANCE = 1e-4  # on the largest gradient entry of the (sample-weight-normalised) objective, as sklearn


def knn_probabilities(
    train: np.ndarray, train_y: np.ndarray, test: np.ndarray, ks: Sequence[int], classes: int
) -> dict[int, np.ndarray]:
    """k -> (n_test, C) vote shares among the k nearest training vectors (raw cosine)."""
    space = VectorSpace("cosine")
    deepest = min(max(ks), len(train))
    neighbours = exact_neighbours(space.prepare(train), space.prepare(test), "cosine", deepest)
    votes = np.cumsum(np.eye(classes, dtype=np.float32)[train_y[neighbours]], axis=1)  # (n, k, C)
    return {k: votes[:, min(k, deepest) - 1] / min(k, deepest) for k in ks}


def prototype_probabilities(
    train: np.ndarray, train_y: np.ndarray, test: np.ndarray, classes: int
) -> np.ndarray:
    """Softmax over the cosine to each class mean (vectors centred on the training mean, unit length)."""
    space = VectorSpace.fit("cosine", True, train)
    unit_train, unit_test = space.prepare(train), space.prepare(test)
    means = np.stack([unit_train[train_y == c].mean(axis=0) for c in range(classes)])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return _softmax((unit_test @ means.T) / PROTOTYPE_TEMPERATURE)


@dataclass(frozen=True)
class LinearFit:
    """Test probabilities of the refit model, and the C the inner folds chose."""

    probabilities: np.ndarray
    c: float


def linear_probabilities(
    train: np.ndarray,
    train_y: np.ndarray,
    test: np.ndarray,
    classes: int,
    inner: Sequence[tuple[np.ndarray, np.ndarray]],
    cs: Sequence[float] = C_GRID,
) -> LinearFit:
    """Choose C over `cs` (ascending) on the `inner` (train, validation) folds of `train`, then refit.

    The inner folds are solved together as one batched problem (one matrix product per step for all of
    them), each C warm-started from the previous one; the path stops once the validation loss has not
    improved for PATH_PATIENCE steps (it is unimodal in C in practice, and the weak-regularisation end is
    the slow one). With `cs` of one value, no inner folds are run.
    """
    x, mean, scale = _standardised(train)
    weights = _balanced_weights(train_y, classes)
    problem = _Problem(x, train_y, 1 if classes == 2 else classes)
    chosen, start = float(cs[0]), None
    if len(cs) > 1:
        chosen, start = _choose_c(problem, weights, inner, cs)
    params = problem.fit(weights[None, :], chosen, start)
    x_test = (np.asarray(test, dtype=np.float32) - mean) / scale
    return LinearFit(problem.probabilities(x_test, params)[0], chosen)


def _choose_c(
    problem: _Problem,
    weights: np.ndarray,
    inner: Sequence[tuple[np.ndarray, np.ndarray]],
    cs: Sequence[float],
) -> tuple[float, np.ndarray]:
    """The C with the lowest summed validation log-loss, and the mean of the folds' weights at it."""
    rows = np.zeros((len(inner), len(weights)), dtype=np.float32)
    for fold, (fit_rows, _) in enumerate(inner):
        rows[fold, fit_rows] = weights[fit_rows]
    params = None
    best: tuple[float, float, np.ndarray | None] = (np.inf, float(cs[0]), None)
    since_best = 0
    for c in cs:
        params = problem.fit(rows, c, params)
        probabilities = problem.probabilities(problem.x, params)
        loss = 0.0
        for fold, (_, held_out) in enumerate(inner):
            picked = probabilities[fold, held_out, problem.y[held_out]]
            loss += float(-np.log(np.maximum(picked, 1e-15)).mean())
        if loss < best[0]:
            best, since_best = (loss, float(c), params.mean(axis=0, keepdims=True)), 0
        else:
            since_best += 1
            if since_best >= PATH_PATIENCE:
                break
    return best[1], best[2]


class _Problem:
    """Logistic regression on standardised `x`: binomial (outputs 1) or multinomial, several weightings
    of the same rows solved at once. Parameters: (problems, dim + 1, outputs), the bias last."""

    def __init__(self, x: np.ndarray, y: np.ndarray, outputs: int) -> None:
        self.x, self.y, self.outputs = x, y, outputs
        self.targets = (y[:, None] == np.arange(outputs)[None, :]).astype(np.float32)
        if outputs == 1:
            self.targets = (y == 1).astype(np.float32)[:, None]

    def fit(self, rows: np.ndarray, c: float, start: np.ndarray | None) -> np.ndarray:
        """Minimise, per problem f (a row of `rows`: sample weights, 0 = not in it),
        sum_i w_fi loss_fi / sum_i w_fi + |W_f|^2 / (2 C sum_i w_fi): scikit-learn's scaling, with
        L-BFGS-B and its tolerance on the largest gradient entry."""
        from scipy.optimize import minimize

        problems, dim = rows.shape[0], self.x.shape[1]
        shape = (problems, dim + 1, self.outputs)
        if start is None:
            start = np.zeros(shape, dtype=np.float64)
        start = np.broadcast_to(start, shape).astype(np.float64)
        totals = rows.sum(axis=1).astype(np.float64)
        scaled_rows = (rows / totals[:, None]).astype(np.float32)  # (problems, n)
        penalty = 1.0 / (c * totals)

        big = self.x.size * problems * self.outputs >= PARALLEL_WORK

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            with _blas_threads(None if big else 1):
                return gradient_of(flat)

        def gradient_of(flat: np.ndarray) -> tuple[float, np.ndarray]:
            params = flat.reshape(shape).astype(np.float32)
            logits = self._logits(self.x, params)  # (problems, n, outputs)
            loss, residual = self._loss_and_residual(logits)
            value = float((loss * scaled_rows).sum(dtype=np.float64))
            weighted = residual * scaled_rows[:, :, None]  # d loss / d logits
            gradient = np.empty(shape, dtype=np.float64)
            joined = weighted.transpose(1, 0, 2).reshape(len(self.x), problems * self.outputs)
            gradient[:, :dim, :] = (self.x.T @ joined).reshape(dim, problems, self.outputs).transpose(1, 0, 2)
            gradient[:, dim, :] = weighted.sum(axis=1)
            coefficients = flat.reshape(shape)[:, :dim, :]
            value += float((penalty * (coefficients**2).sum(axis=(1, 2))).sum() / 2)
            gradient[:, :dim, :] += penalty[:, None, None] * coefficients
            return value, gradient.ravel()

        with _blas_threads(1):  # L-BFGS-B's own small BLAS calls: threads cost more than they split
            found = minimize(
                objective,
                start.ravel(),
                jac=True,
                method="L-BFGS-B",
                options={
                    "maxiter": MAX_ITER,
                    "gtol": TOLERANCE,
                    "ftol": 64 * np.finfo(float).eps,
                    "maxls": 50,
                },
            )
        return found.x.reshape(shape)

    def probabilities(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        """(problems, n, classes) probabilities."""
        logits = self._logits(x, params.astype(np.float32))
        if self.outputs == 1:
            positive = expit(logits[..., 0])
            return np.stack([1 - positive, positive], axis=-1)
        return _softmax_last(logits)

    def _logits(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        problems, rows_plus_bias, outputs = params.shape
        dim = rows_plus_bias - 1
        flat = x @ params[:, :dim, :].transpose(1, 0, 2).reshape(dim, problems * outputs)
        return flat.reshape(len(x), problems, outputs).transpose(1, 0, 2) + params[:, dim, :][:, None, :]

    def _loss_and_residual(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample loss (problems, n) and its derivative by the logits (problems, n, outputs)."""
        if self.outputs == 1:
            z = logits[..., 0]
            loss = np.logaddexp(0, z) - self.targets[:, 0] * z
            return loss, (expit(z) - self.targets[:, 0])[..., None]
        probabilities = _softmax_last(logits)
        picked = (logits * self.targets[None]).sum(axis=2)
        shifted = logits.max(axis=2)
        loss = shifted + np.log(np.exp(logits - shifted[..., None]).sum(axis=2)) - picked
        return loss, probabilities - self.targets[None]


@functools.cache
def _blas_controller() -> tuple[Any, int]:
    """threadpoolctl's controller, and the BLAS threads configured when it was first asked for."""
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    configured = max(
        (lib["num_threads"] for lib in controller.info() if lib["user_api"] == "blas"), default=1
    )
    return controller, int(configured)


@contextlib.contextmanager
def _blas_threads(count: int | None) -> Iterator[None]:
    """BLAS limited to `count` threads inside the block (None: as many as configured)."""
    controller, configured = _blas_controller()
    with controller.limit(limits=count or configured, user_api="blas"):
        yield


def _standardised(train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(standardised float32 copy, mean, scale): statistics accumulated in float64, the arrays kept in
    float32 (a float64 copy of the training matrix cost a quarter of the probe's time)."""
    x = np.asarray(train, dtype=np.float32)
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    x = x - mean
    scale = np.sqrt(np.einsum("ij,ij->j", x, x, dtype=np.float64) / len(x)).astype(np.float32)
    scale[scale == 0] = 1.0
    x /= scale
    return x, mean, scale


def _balanced_weights(y: np.ndarray, classes: int) -> np.ndarray:
    """scikit-learn's class_weight="balanced": n / (C * n_c) for each sample of class c."""
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    per_class = len(y) / (classes * np.maximum(counts, 1))
    return per_class[y].astype(np.float32)


def _softmax_last(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
