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

from ..evaluate.neighbours import exact_neighbours
from ..evaluate.space import VectorSpace

PROTOTYPE_TEMPERATURE = 0.1  # softmax over cosines in [-1, 1]; only AUROC sees it (rank within a class)
C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 10))  # scikit-learn's LogisticRegressionCV default
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
    return knn_votes(train_y[neighbours], ks, classes)


def knn_votes(neighbour_labels: np.ndarray, ks: Sequence[int], classes: int) -> dict[int, np.ndarray]:
    """k -> (n_test, C) vote shares among the first k of each row's neighbours' labels (best first)."""
    deepest = neighbour_labels.shape[1]
    votes = np.cumsum(np.eye(classes, dtype=np.float32)[neighbour_labels], axis=1)  # (n, k, C)
    return {k: votes[:, min(k, deepest) - 1] / min(k, deepest) for k in ks}


def prototype_probabilities(
    train: np.ndarray, train_y: np.ndarray, test: np.ndarray, classes: int
) -> np.ndarray:
    """Softmax over the cosine to each class mean (vectors centred on the training mean, unit length)."""
    space = VectorSpace.fit("cosine", True, train)
    unit_train, unit_test = space.prepare(train), space.prepare(test)
    members = np.eye(classes, dtype=np.float32)[train_y]  # (n, C) one-hot
    means = (members.T @ unit_train) / np.maximum(members.sum(axis=0), 1)[:, None]
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
    first_c: float | None = None,
) -> LinearFit:
    """Choose C over `cs` (ascending) on the `inner` (train, validation) folds of `train`, then refit.

    The inner folds are solved together as one batched problem (one matrix product per step for all of
    them). The search walks the grid from the smallest C, each C warm-started from its neighbour, and
    stops where the validation loss rises (see `_choose_c`). `first_c` starts the search at that C
    instead: the probe passes the C an earlier split of the same vectors chose, where the optimum usually
    is. (Only the C is passed on, never weights: a split's weights were fitted on rows that another
    split validates on.) With `cs` of one value, no inner folds are run.
    """
    x, mean, scale = _standardised(train)
    weights = _balanced_weights(train_y, classes)
    problem = _Problem(x, train_y, 1 if classes == 2 else classes)
    chosen, start = float(cs[0]), None
    if len(cs) > 1:
        first = 0 if first_c is None else int(np.abs(np.log(cs) - np.log(first_c)).argmin())
        chosen, path = _choose_c(problem, weights, inner, cs, first)
        start = path[chosen].mean(axis=0, keepdims=True)  # the refit starts from the folds' mean
    params = problem.fit(weights[None, :], chosen, start)
    x_test = (np.asarray(test, dtype=np.float32) - mean) / scale
    return LinearFit(problem.probabilities(x_test, params)[0], chosen)


def _choose_c(
    problem: _Problem,
    weights: np.ndarray,
    inner: Sequence[tuple[np.ndarray, np.ndarray]],
    cs: Sequence[float],
    first: int,
) -> tuple[float, dict[float, np.ndarray]]:
    """The C with the lowest summed validation log-loss, and the inner folds' weights at each C tried.

    A local search on the grid: from `cs[first]` up while the loss falls, and down from it if the first
    step up did not help. The validation loss is unimodal in C in practice (scikit-learn scores every C;
    on the benchmark's and the tests' tasks both choose the same), so this finds the same minimum with
    a third of the fits when `first` is near it. `cs[first]` starts from zero, every other C from its
    neighbour's weights.
    """
    rows = np.zeros((len(inner), len(weights)), dtype=np.float32)
    for fold, (fit_rows, _) in enumerate(inner):
        rows[fold, fit_rows] = weights[fit_rows]
    losses: dict[float, float] = {}
    path: dict[float, np.ndarray] = {}

    def loss_at(index: int, neighbour: float | None) -> float:
        c = float(cs[index])
        params = problem.fit(rows, c, path.get(neighbour) if neighbour is not None else None)
        probabilities = problem.probabilities(problem.x, params)
        losses[c] = sum(
            float(-np.log(np.maximum(probabilities[fold, held_out, problem.y[held_out]], 1e-15)).mean())
            for fold, (_, held_out) in enumerate(inner)
        )
        path[c] = params
        return losses[c]

    best = float(cs[first])
    loss_at(first, None)
    for step in (1, -1):
        index = first + step
        while 0 <= index < len(cs) and loss_at(index, float(cs[index - step])) < losses[best]:
            best, index = float(cs[index]), index + step
        if best != cs[first]:
            break
    return best, path


class _Problem:
    """Logistic regression on standardised `x`: binomial (outputs 1) or multinomial, several weightings
    of the same rows solved at once. Parameters: (problems, dim + 1, outputs), the bias last.

    Logits and residuals are laid out class-major, (outputs, problems, n): the products are
    `weights.T @ x.T` and `residual @ x` (no copies of x), and the softmax's sums and maxima over
    classes are element-wise passes over contiguous (problems, n) planes: several times faster than
    reducing a short last axis, and the element-wise work was a third of a step."""

    def __init__(self, x: np.ndarray, y: np.ndarray, outputs: int) -> None:
        self.x, self.y, self.outputs = x, y, outputs
        classes = max(outputs, 2)
        self.truth = (np.arange(classes)[:, None] == y[None, :])[:, None, :]  # (classes, 1, n) one-hot
        self.positive = self.truth[1].astype(np.float32)  # binomial targets, (1, n)

    def fit(
        self, rows: np.ndarray, c: float, start: np.ndarray | None, tolerance: float = TOLERANCE
    ) -> np.ndarray:
        """Minimise, per problem f (a row of `rows`: sample weights, 0 = not in it),
        sum_i w_fi loss_fi / sum_i w_fi + |W_f|^2 / (2 C sum_i w_fi): scikit-learn's scaling, with
        L-BFGS-B and `tolerance` on the largest gradient entry (scikit-learn's default: TOLERANCE)."""
        from scipy.optimize import minimize

        problems, (n, dim), outputs = rows.shape[0], self.x.shape, self.outputs
        shape = (problems, dim + 1, outputs)
        if start is None:
            start = np.zeros(shape, dtype=np.float64)
        start = np.broadcast_to(start, shape).astype(np.float64)
        totals = rows.sum(axis=1).astype(np.float64)
        scaled_rows = (rows / totals[:, None]).astype(np.float32)  # (problems, n)
        penalty = 1.0 / (c * totals)
        big = self.x.size * problems * outputs >= PARALLEL_WORK

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            params = flat.reshape(shape)
            with _blas_threads(None if big else 1):
                loss, residual = self._loss_and_residual(self._logits(self.x, params))
                residual *= scaled_rows[None, :, :]  # d loss / d logits, (outputs, problems, n)
                joined = residual.reshape(outputs * problems, n)
                product = (joined @ self.x).reshape(outputs, problems, dim)
            value = float(np.einsum("pi,pi->", loss, scaled_rows, dtype=np.float64))
            gradient = np.empty(shape, dtype=np.float64)
            gradient[:, :dim, :] = product.transpose(1, 2, 0)
            gradient[:, dim, :] = joined.sum(axis=1, dtype=np.float64).reshape(outputs, problems).T
            coefficients = params[:, :dim, :]
            value += float(penalty @ np.einsum("pdk,pdk->p", coefficients, coefficients)) / 2
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
                    "gtol": tolerance,
                    "ftol": 64 * np.finfo(float).eps,
                    "maxls": 50,
                },
            )
        return found.x.reshape(shape)

    def probabilities(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        """(problems, n, classes) probabilities."""
        logits = self._logits(x, params)
        if self.outputs == 1:
            positive = expit(logits[0])
            return np.stack([1 - positive, positive], axis=-1)
        shifted = np.exp(logits - logits.max(axis=0))
        shifted /= shifted.sum(axis=0)
        return shifted.transpose(1, 2, 0)

    def _logits(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        """(outputs, problems, n) logits of `x` under `params` (problems, dim + 1, outputs)."""
        problems, dim_plus_bias, outputs = params.shape
        dim = dim_plus_bias - 1
        weights = params[:, :dim, :].transpose(2, 0, 1).reshape(outputs * problems, dim).astype(np.float32)
        logits = weights @ x.T
        logits += params[:, dim, :].T.reshape(outputs * problems, 1).astype(np.float32)
        return logits.reshape(outputs, problems, len(x))

    def _loss_and_residual(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample loss (problems, n) and its derivative by the logits (outputs, problems, n), both
        new arrays (the residual may be scaled in place)."""
        if self.outputs == 1:
            z = logits[0]
            loss = np.logaddexp(0, z) - self.positive * z
            return loss, (expit(z) - self.positive)[None]
        largest = logits.max(axis=0)
        probabilities = np.exp(logits - largest)
        totals = probabilities.sum(axis=0)
        picked = np.where(self.truth, logits, 0).sum(axis=0)  # the true class's logit, (problems, n)
        loss = largest + np.log(totals) - picked
        probabilities /= totals
        probabilities -= self.truth
        return loss, probabilities


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


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
