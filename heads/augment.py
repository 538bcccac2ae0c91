"""Feature-space augmentations of embedding batches, parsed from a spec string.

    pipeline = parse_augmentations("noise:0.1,mixup:0.4,smote:5,views").fit(x, y_codes, classes)
    x_aug, y_aug = pipeline(x, y_onehot, generator)

SMOTE runs first (it needs the batch's hard labels, which mixup softens), then the other steps in spec
order, on a batch of vectors `x` (b, d) and soft labels `y` (b, C); they return a batch
of the same width whose label rows still sum to 1 (SMOTE appends rows, the others keep the count).
Every random draw comes from the `torch.Generator` handed in (on the batch's device), so a seeded
generator gives the same batches every run.

- `noise:S`      x + S * std * N(0, 1), std per dimension from the training vectors.
- `dropout:P`    zero each feature with probability P, scale kept ones by 1 / (1 - P) (inverted).
- `mixup:A[:within|across]`  per sample lambda ~ Beta(A, A); x and y mixed with the same lambda;
                 `across` partners any sample of the batch, whatever its class (the default: `mixup:A`
                 is `mixup:A:across`), `within` one of the same class (labels stay hard).
- `smote:K`      per sample of a minority class (training count below the largest class's) with a hard
                 label: one extra sample x + u * (nbr - x), u ~ U(0, 1), nbr one of the K nearest (L2)
                 training vectors of its class other than x itself; label = the class. It runs before
                 the other steps wherever the spec puts it: rows mixed across classes are no class's.
- `views`        marker only (`uses_views`): the data layer samples one stored view per tile per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .augment_spec import HELP, RANGES, VALID, StepSpec, parse_spec  # noqa: F401 (the grammar's home)
from .errors import HeadsError

SMOTE_BANK_LIMIT = 50_000  # training vectors kept per minority class (a deterministic sample above it)
SMOTE_DISTANCE_ROWS = 4096  # batch rows per distance block: bounds the (rows, bank) matrix


def _canonical(value: float) -> str:
    return repr(float(value))


class Step:
    """One augmentation: `fit` on training vectors, then `__call__` on batches."""

    name = ""

    @property
    def spec(self) -> str:
        return self.name

    def fit(self, x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> None:
        """Statistics from training vectors `x` (n, d), codes `y` (n,), training counts per class."""

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y


def column_stats(x: np.ndarray, rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of x (n, d) in float64, the very values of numpy's
    x.mean(axis=0, dtype=np.float64) and x.std(axis=0, dtype=np.float64), but `rows` rows at a time:
    numpy's std holds an (n, d) float64 copy of x (200 MB for a 20,000 x 1,280 sample)."""
    n = len(x)
    total = np.add.reduce(x, axis=0, dtype=np.float64, keepdims=True)
    mean = np.true_divide(total, n)  # numpy's mean and std both divide the float64 sum by n
    squares = None
    for start in range(0, n, rows):
        part = np.subtract(x[start : start + rows], mean, dtype=np.float64)
        np.multiply(part, part, out=part)
        if squares is not None:
            part[0] += squares  # one running sum down the rows, the order numpy's reduction adds them in
        squares = np.add.reduce(part, axis=0)
    if squares is None:
        squares = np.full(x.shape[1:], np.nan)
    return mean[0], np.sqrt(squares / n)


@dataclass
class Noise(Step):
    scale: float
    name = "noise"
    std: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def spec(self) -> str:
        return f"noise:{_canonical(self.scale)}"

    def fit(self, x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> None:
        self.std = torch.from_numpy(column_stats(x)[1].astype(np.float32))

    def __call__(self, x, y, generator):
        if self.std is None:
            raise HeadsError("augmentation 'noise' has no training std: call AugmentationPipeline.fit first")
        if self.std.device != x.device:
            self.std = self.std.to(x.device)  # moved once: training stays on one device
        std = self.std
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + noise * (self.scale * std), y


@dataclass
class Dropout(Step):
    p: float
    name = "dropout"

    @property
    def spec(self) -> str:
        return f"dropout:{_canonical(self.p)}"

    def __call__(self, x, y, generator):
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p), y


@dataclass
class Mixup(Step):
    alpha: float
    within: bool = False
    name = "mixup"

    @property
    def spec(self) -> str:
        return f"mixup:{_canonical(self.alpha)}:{'within' if self.within else 'across'}"

    def partners(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Row index of each sample's partner: a random permutation, within a class for `within`."""
        n = len(y)
        if not self.within:
            return torch.randperm(n, generator=generator, device=y.device)
        label = y.argmax(dim=1).to(torch.float64)
        # Rows sorted by class, randomly ordered within it, twice: same positions hold the same class.
        first = torch.argsort(
            label + torch.rand(n, generator=generator, device=y.device, dtype=torch.float64)
        )
        second = torch.argsort(
            label + torch.rand(n, generator=generator, device=y.device, dtype=torch.float64)
        )
        partner = torch.empty_like(first)
        partner[first] = second
        return partner

    def __call__(self, x, y, generator):
        if len(x) < 2:
            return x, y
        partner = self.partners(y, generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=x.device).item())
        draws = np.random.default_rng(seed).beta(self.alpha, self.alpha, size=len(x)).astype(np.float32)
        lam = torch.from_numpy(draws).to(x.device)[:, None]
        return lam * x + (1 - lam) * x[partner], lam * y + (1 - lam) * y[partner]


@dataclass
class Smote(Step):
    k: int
    name = "smote"
    banks: dict[int, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    minority: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def spec(self) -> str:
        return f"smote:{self.k}"

    def fit(self, x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> None:
        counts = np.asarray(counts)
        self.minority = torch.from_numpy((counts > 0) & (counts < counts.max()))
        self.banks = {}
        for c in np.flatnonzero(self.minority.numpy()):
            rows = np.flatnonzero(y == c)
            if len(rows) > SMOTE_BANK_LIMIT:
                rows = np.sort(np.random.default_rng(0).choice(rows, SMOTE_BANK_LIMIT, replace=False))
            if len(rows):
                self.banks[int(c)] = torch.from_numpy(np.ascontiguousarray(x[rows], dtype=np.float32))

    def __call__(self, x, y, generator):
        if self.minority is None:
            raise HeadsError("augmentation 'smote' has no training bank: call AugmentationPipeline.fit first")
        top, label = y.max(dim=1)
        hard = top >= 1 - 1e-6
        new_x, new_y = [x], [y]
        for c, bank in self.banks.items():
            rows = torch.nonzero(hard & (label == c)).flatten()
            if len(rows) == 0:
                continue
            if bank.device != x.device:
                bank = self.banks[c] = bank.to(x.device)  # moved once: training stays on one device
            synthetic = self._synthesise(x[rows], bank, generator)
            if len(synthetic):
                new_x.append(synthetic)
                target = torch.zeros(len(synthetic), y.shape[1], dtype=y.dtype, device=y.device)
                target[:, c] = 1
                new_y.append(target)
        if len(new_x) == 1:
            return x, y
        return torch.cat(new_x), torch.cat(new_y)

    def _synthesise(self, x: torch.Tensor, bank: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One point on the segment from each row of `x` to one of its K nearest bank vectors (not itself);
        rows with no other bank vector give none."""
        depth = min(self.k + 1, len(bank))
        nearest = torch.cat(
            [
                torch.cdist(x[i : i + SMOTE_DISTANCE_ROWS], bank).topk(depth, dim=1, largest=False).indices
                for i in range(0, len(x), SMOTE_DISTANCE_ROWS)
            ]
        )  # (m, depth)
        candidates = bank[nearest]  # (m, depth, d)
        other = (candidates != x[:, None, :]).any(dim=2)  # the sample itself (or an exact copy) excluded
        kept = other & (torch.cumsum(other.to(torch.int64), dim=1) <= self.k)
        available = kept.sum(dim=1)
        usable = available > 0
        pick = (torch.rand(len(x), generator=generator, device=x.device) * available).floor().to(torch.int64)
        # The pick-th kept candidate of each row: where the running count of kept ones reaches pick + 1.
        slot = (kept & (torch.cumsum(kept.to(torch.int64), dim=1) == (pick + 1)[:, None])).to(torch.int64)
        neighbour = candidates[torch.arange(len(x), device=x.device), slot.argmax(dim=1)]
        u = torch.rand(len(x), 1, generator=generator, device=x.device, dtype=x.dtype)
        return (x + u * (neighbour - x))[usable]


@dataclass
class Views(Step):
    name = "views"


def _step(spec: StepSpec) -> Step:
    """The step a parsed spec names."""
    if spec.name == "views":
        return Views()
    if spec.name == "noise":
        return Noise(float(spec.params[0]))
    if spec.name == "dropout":
        return Dropout(float(spec.params[0]))
    if spec.name == "mixup":
        return Mixup(float(spec.params[0]), within=spec.params[1] == "within")
    return Smote(int(spec.params[0]))


class AugmentationPipeline:
    """Parsed augmentation steps (SMOTE first, the rest in spec order); `fit` on training vectors, then
    call on batches."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = sorted(steps, key=lambda step: not isinstance(step, Smote))  # stable: SMOTE first
        self.uses_views = any(isinstance(s, Views) for s in self.steps)
        self.spec = ",".join(s.spec for s in self.steps)

    def __repr__(self) -> str:
        return f"AugmentationPipeline({self.spec!r})"

    @property
    def needs_fit(self) -> bool:
        """Whether a step needs training statistics (noise: std; smote: banks)."""
        return any(isinstance(s, Noise | Smote) for s in self.steps)

    def fit(
        self, x: np.ndarray, y: np.ndarray, classes: int, class_counts: np.ndarray | None = None
    ) -> AugmentationPipeline:
        """Statistics from training vectors `x` (n, d) with codes `y` (n,) in 0..classes-1: per-dim std
        (noise) and minority-class banks (smote). Streaming callers pass a bounded sample, and then the
        full training counts per class as `class_counts` (which classes are minority); by default the
        counts of `y`."""
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        if x.ndim != 2 or len(x) != len(y):
            raise HeadsError(f"augmentation fit needs x (n, d) and y (n,), got {x.shape} and {y.shape}")
        counts = np.bincount(y, minlength=classes) if class_counts is None else np.asarray(class_counts)
        if len(counts) != classes:
            raise HeadsError(f"class_counts has {len(counts)} entries for {classes} classes")
        for step in self.steps:
            step.fit(x, y, counts)
        return self

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented (b', d) vectors and (b', C) soft labels; `generator` on x's device."""
        for step in self.steps:
            x, y = step(x, y, generator)
        return x, y


def parse_augmentations(spec: str) -> AugmentationPipeline:
    """Steps from "name[:param[:param]],..." ("" = none); HeadsError naming valid names on a bad one."""
    return AugmentationPipeline([_step(step) for step in parse_spec(spec)])
