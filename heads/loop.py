"""The one training loop of a head: epochs of batches, validation scores, early stopping, the best state.

    run = train_epochs(head, ArrayBatches(x, codes, head.batch_size, generator), validation)
    head.load_state_dict(run.best.state)

`LinearHead.fit`/`partial_fit` (in-memory arrays) and `heads.train` (batches streamed from the store) both
train through it; they differ only in where batches come from (`Batches`: `ArrayBatches` or
`heads.tile_batches.BatchStream`). A batch is `(x (b, d), class codes (b,), ...)`; items after the codes are
ignored. Each step augments, then takes one optimiser step on the head's loss (`head._train_step`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from .errors import HeadsError
from .options import check_head_params


class NoValidationRows(HeadsError):
    """The validation batches held no row."""


class Batches(Protocol):
    """Where an epoch's batches come from: `epoch(n)` yields `(x, codes, ...)`; `len()` is rows per epoch."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int = 0) -> Iterable[tuple[Any, ...]]: ...


class Trainable(Protocol):
    """What the loop needs of a head (`heads.estimators.BaseHead` is one)."""

    device_: torch.device
    early_stopping: str
    patience: int | None

    def _train_step(self, x: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, int] | None: ...

    def predict_proba(self, X: Any) -> np.ndarray: ...

    def validation_scores(self, probabilities: np.ndarray, y_codes: np.ndarray) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...


class ArrayBatches:
    """Batches of in-memory arrays: shuffled by `generator` each epoch (a fresh permutation split into
    ceil(n / batch_size) near-equal batches), or in order as one batch without a generator."""

    def __init__(
        self,
        x: np.ndarray,
        codes: np.ndarray,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.x, self.codes = x, codes
        self.batch_size, self.generator = batch_size, generator

    def __len__(self) -> int:
        return len(self.x)

    def epoch(self, epoch: int = 0) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        n = len(self.x)
        if self.generator is None or self.batch_size is None:
            yield self.x, self.codes
            return
        order = torch.randperm(n, generator=self.generator)
        for index in torch.tensor_split(order, max(1, math.ceil(n / self.batch_size))):
            rows = index.numpy()
            yield self.x[rows], self.codes[rows]


class EarlyStopping:
    """Tracks the best epoch by `metric` (higher is better; lower for "loss") and keeps that epoch's
    weights (`head.state_dict()`). `update` returns True once `patience` epochs in a row brought no
    improvement (never with patience=None). A NaN score never counts as an improvement."""

    def __init__(self, metric: str = "auroc", patience: int | None = 5) -> None:
        check_head_params({"early_stopping": metric})
        self.metric = metric
        self.patience = patience
        self.best_epoch: int | None = None
        self.best_value = math.nan
        self.best_scores: dict[str, float] = {}
        self.best_state: dict | None = None
        self.waiting = 0

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if math.isnan(self.best_value):
            return True
        return value < self.best_value if self.metric == "loss" else value > self.best_value

    def update(self, epoch: int, scores: Mapping[str, float], head: Any) -> bool:
        value = float(scores[self.metric])
        if self.best_state is None or self.improves(value):
            self.best_epoch, self.best_value, self.best_scores = epoch, value, dict(scores)
            self.best_state = head.state_dict()
            self.waiting = 0
        else:
            self.waiting += 1
        return self.patience is not None and self.waiting >= self.patience


@dataclass
class Epoch:
    """One epoch: its mean training loss and, with validation batches, the validation scores (`f1:<code>`
    keys) and probabilities (rows in `codes` order; kept for the best epoch only)."""

    number: int
    train_loss: float
    seconds: float
    scores: dict[str, float] | None = None
    probabilities: np.ndarray | None = field(default=None, repr=False)
    codes: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Run:
    """What `train_epochs` did: every epoch, the best one (with its weights; None without validation)
    and whether early stopping ended the run before its last epoch."""

    epochs: list[Epoch]
    best: Epoch | None = None
    best_state: dict | None = field(default=None, repr=False)
    stopped: bool = False


def train_epoch(
    head: Trainable, batches: Batches, epoch: int = 0, on_batch: Callable[[int], None] | None = None
) -> float:
    """One pass of optimiser steps over `batches.epoch(epoch)`; the mean training loss per row trained on
    (after augmentation; NaN when every step was skipped)."""
    device = head.device_
    total, rows = torch.zeros((), dtype=torch.float64, device=device), 0
    for x, codes, *_ in batches.epoch(epoch):
        x_tensor = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(device)
        code_tensor = torch.from_numpy(np.asarray(codes, dtype=np.int64).ravel()).to(device)
        done = head._train_step(x_tensor, code_tensor)
        if done is not None:
            total += done[0].double() * done[1]
            rows += done[1]
        if on_batch is not None:
            on_batch(len(x))
    return float(total) / rows if rows else math.nan


def validation_probabilities(head: Trainable, batches: Batches) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, C), codes (n,)) of every validation batch, in the order they come."""
    probabilities, codes = [], []
    for x, y, *_ in batches.epoch(0):
        probabilities.append(head.predict_proba(x))
        codes.append(np.asarray(y, dtype=np.int64).ravel())
    if not probabilities:
        raise NoValidationRows("the validation batches hold no row")
    return np.concatenate(probabilities), np.concatenate(codes)


def train_epochs(
    head: Trainable,
    batches: Batches,
    validation: Batches | None = None,
    *,
    epochs: int,
    on_batch: Callable[[int], None] | None = None,
    on_epoch: Callable[[Epoch, EarlyStopping | None], None] | None = None,
) -> Run:
    """Train `epochs` epochs (epoch numbers from 1). With `validation`: score it after each epoch, keep
    the best epoch's weights by `head.early_stopping` and stop after `head.patience` epochs without
    improvement. `on_batch(rows)` after each step, `on_epoch(epoch, stopper)` after each epoch."""
    stopper = EarlyStopping(head.early_stopping, head.patience) if validation is not None else None
    run = Run([])
    for number in range(1, epochs + 1):
        started = time.perf_counter()
        epoch = Epoch(number, train_epoch(head, batches, number, on_batch), 0.0)
        stop = False
        if stopper is not None and validation is not None:
            epoch.probabilities, epoch.codes = validation_probabilities(head, validation)
            epoch.scores = head.validation_scores(epoch.probabilities, epoch.codes)
            stop = stopper.update(number, epoch.scores, head)
            if stopper.best_epoch == number:
                run.best, run.best_state = epoch, stopper.best_state
        epoch.seconds = round(time.perf_counter() - started, 3)
        run.epochs.append(epoch)
        if on_epoch is not None:
            on_epoch(epoch, stopper)
        if run.best is not epoch:
            epoch.probabilities = epoch.codes = None  # only the best epoch's are kept
        if stop:
            run.stopped = True
            break
    return run
