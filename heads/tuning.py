"""Tuning a head: N configurations on one group-aware split, the best kept.

    result = tune(store, "uni", "tumour", 16, head="mlp", epochs=30)   # head: "linear" by default
    print(result.format()); result.table; result.best.card; result.write_json("tuning.json")

Every trial trains with `heads.train` on the SAME TileSplit (made once by `heads.tile_batches.split_tiles`
from group_by, validation and seed), so all configurations are scored on the same validation tiles, none of
which any of them trained on. Trial 0 is always the strong baseline: the estimator's defaults with
class-weighted loss, no augmentation, and (binary) the threshold tuned on validation; so the best
configuration is never worse than the baseline on validation. Trials 1..n-1 are drawn from the search
space with a generator seeded by `seed` (same seed, same space, same table: same configurations).

The selection metric (higher is better) is the positive class's F1 at the tuned threshold
(`f1_at_threshold`) for binary tasks, and macro-F1 (`macro_f1`, at the most probable class) otherwise;
ties go to the earlier trial. Note that the threshold is tuned and scored on the same validation tiles,
the same way for every trial: compare configurations with it, but report performance on held-out tiles.

The search space (`DEFAULT_SPACE`; `space=` replaces some of its entries, `**fixed` removes a dimension
by fixing the estimator parameter(s) it sets, for every trial including the baseline):

    lr              (low, high) log-uniform             default (1e-4, 1e-2)        -> lr
    weight_decay    (low, high) log-uniform             default (1e-6, 1e-1)        -> weight_decay
    hidden          list of widths (or width tuples)    default [64, 128, 256, 512] -> hidden (mlp only)
    dropout         list, or (low, high) uniform        default [0, .1, .2, .3, .5] -> dropout (mlp only)
    class_handling  list of "balanced" | "focal" | "none"  default [balanced, focal]
                    balanced: class_weight="balanced", loss="ce"; focal: class_weight="balanced",
                    loss="focal"; none: class_weight=None, loss="ce"      -> class_weight, loss
    augment         "auto", or a list of spec strings (heads.augment) to choose from  -> augment

A list gives a uniform choice among its values; lr and weight_decay also accept a list. "auto"
augmentation: none with probability 0.2, one kind with 0.5, two different kinds with 0.3; kinds are
noise, dropout, mixup, smote and (when the backbone's table holds stored views) views, each with a
strength drawn from AUGMENT_CHOICES; specs are written canonically (heads.augment runs SMOTE first).

Trials are saved under temporary names while they run and removed; the best is saved as `name` (default
`<task>-<backbone>-<head>`) with its card, whose `tuning` entry holds the whole table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from embedstore.core.location import StorePath, remove_inside
from embedstore.core.reports import JsonReport
from embedstore.embeddings import EmbeddingTable

from .augment import parse_augmentations
from .card import (
    HeadCard,
    StoreArg,
    head_dir,
    heads_root,
    json_ready,
    open_store,
    save_head,
    split_table,
)
from .errors import HeadsError
from .options import DEFAULTS, TRAIN_DEFAULTS
from .tile_batches import TileSplit, split_tiles
from .training import TrainResult, checked_start, train

Say = Callable[[str], None]
TRIAL_PREFIX = 64  # characters of the head's name in its trials' names, which must stay valid head names

DEFAULT_SPACE: dict[str, Any] = {
    "lr": (1e-4, 1e-2),
    "weight_decay": (1e-6, 1e-1),
    "hidden": [64, 128, 256, 512],
    "dropout": [0.0, 0.1, 0.2, 0.3, 0.5],
    "class_handling": ["balanced", "focal"],
    "augment": "auto",
}
MLP_ONLY = ("hidden", "dropout")
CLASS_HANDLING: dict[str, dict[str, Any]] = {
    "balanced": {"class_weight": "balanced", "loss": "ce"},
    "focal": {"class_weight": "balanced", "loss": "focal"},
    "none": {"class_weight": None, "loss": "ce"},
}
# The estimator parameters each space key sets: fixing any of them removes the key from the search.
SETS = {
    "lr": ("lr",),
    "weight_decay": ("weight_decay",),
    "hidden": ("hidden",),
    "dropout": ("dropout",),
    "class_handling": ("class_weight", "loss"),
    "augment": ("augment",),
}
AUGMENT_CHOICES: dict[str, list[str]] = {
    "views": ["views"],
    "smote": ["smote:3", "smote:5", "smote:10"],
    "noise": ["noise:0.05", "noise:0.1", "noise:0.2", "noise:0.3"],
    "dropout": ["dropout:0.1", "dropout:0.2", "dropout:0.3"],
    "mixup": ["mixup:0.2:across", "mixup:0.4:across", "mixup:1.0:across", "mixup:0.4:within"],
}  # canonical specs (as heads.augment writes them)
AUGMENT_MIX = (0.2, 0.5, 0.3)  # P(no augmentation), P(one kind), P(two kinds)
TRAIN_OPTIONS = ("shuffle_buffer",)  # train() options that may be fixed besides estimator parameters
REDRAWS = 20  # attempts to draw a configuration not tried yet


@dataclass
class TuneResult(JsonReport):
    """Every trial (config, validation metrics, seconds) and the best one, saved as `best.card.name`."""

    trials: list[dict[str, Any]]  # one flat dict per trial, in trial order
    best: TrainResult  # the best trial's training, with the saved card and path
    best_trial: int
    metric: str  # f1_at_threshold (binary) | macro_f1
    split: TileSplit
    space: dict[str, Any]  # the space searched (after `space=` and `**fixed`)
    fixed: dict[str, Any]
    seed: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def card(self) -> HeadCard:
        return self.best.card

    @property
    def path(self) -> StorePath:
        return self.best.path

    @property
    def baseline(self) -> dict[str, Any]:
        return self.trials[0]

    @property
    def table(self):
        """The trials as a polars DataFrame (one row per trial)."""
        import polars as pl

        rows = [{k: _cell(v) for k, v in trial.items()} for trial in self.trials]
        return pl.DataFrame(rows, infer_schema_length=None)

    def to_dict(self) -> dict[str, Any]:
        card = self.best.card
        return {
            "name": card.name,
            "backbone": card.backbone,
            "task": card.task,
            "head": card.kind,
            "metric": self.metric,
            "n": len(self.trials),
            "seed": self.seed,
            "best_trial": self.best_trial,
            "baseline_score": self.trials[0]["score"],
            "best_score": self.trials[self.best_trial]["score"],
            "split": {
                "group_by": self.split.group_by,
                "tiles_train": len(self.split.train_ids),
                "tiles_validation": len(self.split.validation_ids),
            },
            "space": json_ready(self.space),
            "fixed": json_ready(self.fixed),
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
            "trials": json_ready(self.trials),
        }

    def format(self) -> str:
        """A terminal table of the trials; '*' marks the best, 'b' the baseline."""
        columns = [("#", "trial", "{}")]
        for key, title in (
            ("lr", "lr"),
            ("weight_decay", "wd"),
            ("hidden", "hidden"),
            ("dropout", "drop"),
            ("class_handling", "classes"),
        ):
            if any(key in t for t in self.trials):
                columns.append((title, key, "{:.2g}" if key in ("lr", "weight_decay") else "{}"))
        columns += [
            ("augment", "augment", "{}"),
            (self.metric, "score", "{:.4f}"),
            ("auroc", "auroc", "{:.4f}"),
        ]
        if any("threshold" in t for t in self.trials):
            columns.append(("thr", "threshold", "{:.3f}"))
        columns += [("epochs", "epochs", "{}"), ("s", "seconds", "{:.1f}")]
        rows = []
        for trial in self.trials:
            row = []
            for _, key, form in columns:
                value = trial.get(key, "")
                if key == "augment":
                    value = value or "-"
                if key == "hidden" and isinstance(value, list | tuple):
                    value = "x".join(str(v) for v in value)
                text = form.format(value) if value != "" and not _isnan(value) else "-"
                row.append(text)
            mark = "*" if trial["trial"] == self.best_trial else ("b" if trial["trial"] == 0 else " ")
            row[0] = f"{mark}{row[0]}"
            rows.append(row)
        titles = [title for title, _, _ in columns]
        widths = [max(len(titles[i]), *(len(r[i]) for r in rows)) for i in range(len(titles))]
        lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        best, base = self.trials[self.best_trial]["score"], self.trials[0]["score"]
        gain = f" ({(best - base) / base:+.1%} over the baseline)" if base and base == base else ""
        lines.append(
            f"best: trial {self.best_trial}, validation {self.metric} {best:.4f}{gain}; "
            f"saved as {self.best.card.name!r} in {self.best.path}"
        )
        return "\n".join(lines)

    def summary(self) -> str:
        best, base = self.trials[self.best_trial]["score"], self.trials[0]["score"]
        return (
            f"tuned {self.best.card.name!r}: {len(self.trials)} configurations on one {self.split.group_by} "
            f"split ({len(self.split.validation_ids)} validation tiles); best trial {self.best_trial}, "
            f"validation {self.metric} {best:.4f} (baseline {base:.4f}) in {self.seconds:.1f} s"
        )


@dataclass
class TunedCard(HeadCard):
    """A HeadCard with the tuning table (written into card.json; `load_head` reads the HeadCard part)."""

    tuning: dict[str, Any] = field(default_factory=dict)


def trial_head_name(name: str, token: str, trial: int) -> str:
    """The name a trial is saved under while it runs: a valid head name for any valid `name` (cut, and
    without a trailing '.' that would make '..')."""
    return f"{name[:TRIAL_PREFIX].rstrip('.')}.tuning-{token}-{trial}"


def tune(
    store: StoreArg,
    backbone: str,
    task: str,
    n: int,
    *,
    name: str | None = None,
    head: str = TRAIN_DEFAULTS["head"],
    space: Mapping[str, Any] | None = None,
    group_by: str | None = TRAIN_DEFAULTS["group_by"],
    validation: float = TRAIN_DEFAULTS["validation"],
    seed: int = DEFAULTS["seed"],
    overwrite: bool = TRAIN_DEFAULTS["overwrite"],
    progress: bool = False,
    say: Say | None = None,
    **fixed: Any,
) -> TuneResult:
    """Train `n` configurations of a `head` on `task` over `backbone`'s vectors, all on one group-aware
    split, and save the best as `name`; see the module doc for the space and the selection metric.

    space: entries replacing DEFAULT_SPACE's (keys: lr, weight_decay, hidden, dropout, class_handling,
    augment). fixed: estimator parameters (and epochs, batch_size, shuffle_buffer) for every trial; a
    fixed parameter is not searched. HeadsError (one line) for n < 1, an unknown or ill-formed space
    entry, a parameter both fixed and given in `space`, and whatever `heads.train` refuses.
    """
    say = say or (lambda _: None)
    started = time.perf_counter()
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise HeadsError(f"--tune {n!r}: give the number of configurations to try, an integer >= 1")
    n = int(n)
    store = open_store(store)
    cls, name, table = checked_start(store, backbone, task, head, name, overwrite)
    searched = _space(head, space, fixed, cls)
    views = EmbeddingTable.of(store, table).has_views()
    split = split_tiles(store, task, backbone, group_by, validation, seed)
    notes = list(split.notes)
    for note in notes:
        say(note)
    configs = draw_configs(n, searched, head, seed, views=views)
    binary = len(split.classes) == 2
    metric = "f1_at_threshold" if binary else "macro_f1"
    say(
        f"tuning {name!r}: {n} configuration(s) of a {head} head on one {split.group_by} split "
        f"({len(split.train_ids)} training / {len(split.validation_ids)} validation tiles), "
        f"selecting on validation {metric}"
    )
    token = uuid.uuid4().hex[:8]
    trials: list[dict[str, Any]] = []
    best: TrainResult | None = None
    best_trial, best_score = 0, -math.inf
    bar = tqdm(total=n, desc=f"tune {name}", unit="trial", disable=not progress, leave=False)
    try:
        for i, config in enumerate(configs):
            trial_name = trial_head_name(name, token, i)
            began = time.perf_counter()
            try:
                result = train(
                    store,
                    backbone,
                    task,
                    name=trial_name,
                    head=head,
                    split=split,
                    seed=seed,
                    **{**_params(config), **fixed},
                )
            finally:
                remove_inside(head_dir(store, trial_name), heads_root(store))
            seconds = time.perf_counter() - began
            score = float(result.validation.get(metric, math.nan))
            trials.append(_record(i, config, result, score, seconds, binary))
            value = score if score == score else -math.inf  # NaN never wins
            if best is None or value > best_score:  # ties keep the earlier trial (the baseline first)
                best, best_trial, best_score = result, i, value
            say(
                f"trial {i} ({i + 1}/{n}): {describe(config)} -> {metric} {_show(score)}, "
                f"auroc {_show(result.validation.get('auroc', math.nan))} ({seconds:.1f} s)"
            )
            bar.update(1)
            bar.set_postfix({"best": f"{best_score:.4f}", "trial": best_trial})
    finally:
        bar.close()
    assert best is not None
    elapsed = time.perf_counter() - started
    record = {
        "metric": metric,
        "n": n,
        "seed": seed,
        "best_trial": best_trial,
        "space": json_ready(searched),
        "fixed": json_ready(fixed),
        "trials": json_ready(trials),
    }
    base = trials[0]["score"]
    note = (
        f"tuned: best of {n} configuration(s) by validation {metric} (trial {best_trial}, "
        f"{_show(trials[best_trial]['score'])}; baseline {_show(base)}); the table is in card.json 'tuning'"
    )
    card = TunedCard(
        **{
            **dataclasses.asdict(best.card),
            "name": name,
            "created": datetime.now(UTC).isoformat(timespec="microseconds"),
            "notes": [*best.card.notes, note],
            "tuning": record,
        }
    )
    record = split_table(split.train_ids.sorted, split.validation_ids.sorted)
    path = save_head(store, card, best.estimator, overwrite=overwrite, split=record)
    best = dataclasses.replace(best, card=card, path=path)
    tuned = TuneResult(
        trials=trials,
        best=best,
        best_trial=best_trial,
        metric=metric,
        split=split,
        space=searched,
        fixed=dict(fixed),
        seed=seed,
        seconds=elapsed,
        notes=notes,
    )
    say(tuned.summary() + f"; saved in {path}")
    return tuned


# -- the space ----------------------------------------------------------------------------------------------


def _space(head: str, space: Mapping[str, Any] | None, fixed: Mapping[str, Any], cls) -> dict[str, Any]:
    """The space searched: DEFAULT_SPACE with `space`'s entries, less the MLP keys for a linear head and
    the keys whose parameters are fixed; every entry checked."""
    given = dict(space or {})
    unknown = sorted(set(given) - set(DEFAULT_SPACE))
    if unknown:
        raise HeadsError(
            f"tune space has no key {', '.join(map(repr, unknown))}; its keys: {', '.join(DEFAULT_SPACE)}"
        )
    if head != "mlp":
        extra = [k for k in MLP_ONLY if k in given]
        if extra:
            raise HeadsError(f"tune space key {', '.join(extra)} applies to mlp heads only, not {head!r}")
    valid = sorted(set(cls().get_params(deep=False)) - {"seed"}) + list(TRAIN_OPTIONS)
    bad = sorted(set(fixed) - set(valid))
    if bad:
        raise HeadsError(
            f"{head} head has no parameter {', '.join(bad)} to fix while tuning; its parameters: "
            f"{', '.join(valid)}"
        )
    out: dict[str, Any] = {}
    for key, default in DEFAULT_SPACE.items():
        if head != "mlp" and key in MLP_ONLY:
            continue
        if any(p in fixed for p in SETS[key]):
            if key in given:
                raise HeadsError(
                    f"tune: {key} is both searched (space) and fixed ({', '.join(SETS[key])}=...); "
                    "give it in one place"
                )
            continue
        out[key] = _checked_entry(key, given.get(key, default))
    return out


def _checked_entry(key: str, value: Any) -> Any:
    """A space entry in its canonical form; HeadsError naming the form expected."""
    if key in ("lr", "weight_decay"):
        if isinstance(value, tuple) and len(value) == 2 and all(_positive(v) for v in value):
            low, high = float(value[0]), float(value[1])
            if low <= high:
                return (low, high)
        if _nonempty_list(value) and all(_positive(v) or (key == "weight_decay" and v == 0) for v in value):
            return [float(v) for v in value]
        raise HeadsError(
            f"tune space {key}={value!r}: give (low, high) with 0 < low <= high (log-uniform) or a list of "
            "numbers > 0"
        )
    if key == "hidden":
        if _nonempty_list(value):
            widths = [(v,) if isinstance(v, int | np.integer) else tuple(v) for v in value]
            if all(w and all(isinstance(h, int | np.integer) and h >= 1 for h in w) for w in widths):
                return [tuple(int(h) for h in w) for w in widths]
        raise HeadsError(
            f"tune space hidden={value!r}: give a list of widths (e.g. [128, 256] or [(256, 64)])"
        )
    if key == "dropout":
        ok = lambda v: _number(v) and 0 <= v < 1  # noqa: E731
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and all(ok(v) for v in value)
            and value[0] <= value[1]
        ):
            return (float(value[0]), float(value[1]))
        if _nonempty_list(value) and all(ok(v) for v in value):
            return [float(v) for v in value]
        raise HeadsError(
            f"tune space dropout={value!r}: give a list of numbers in [0, 1) or (low, high) (uniform)"
        )
    if key == "class_handling":
        if _nonempty_list(value) and all(v in CLASS_HANDLING for v in value):
            return list(value)
        raise HeadsError(
            f"tune space class_handling={value!r}: give a list of {', '.join(map(repr, CLASS_HANDLING))}"
        )
    # augment
    if value == "auto":
        return "auto"
    if _nonempty_list(value) and all(isinstance(v, str) for v in value):
        return [parse_augmentations(v).spec for v in value]  # a bad spec: HeadsError naming valid ones
    raise HeadsError(f"tune space augment={value!r}: give 'auto' or a list of augmentation specs")


def draw_configs(n: int, space: Mapping[str, Any], head: str, seed: int, views: bool = False) -> list[dict]:
    """n configurations: the strong baseline, then n - 1 drawn from `space` (seeded; a configuration
    already drawn is drawn again, up to REDRAWS times). Keys: those of `space` (MLP keys only for mlp)."""
    rng = np.random.default_rng([int(seed), 0x7E5E])
    configs = [baseline_config(space)]
    seen = {_key(configs[0])}
    for _ in range(n - 1):
        for _attempt in range(REDRAWS):
            config = {key: _draw(key, value, rng, views) for key, value in space.items()}
            if _key(config) not in seen:
                break
        seen.add(_key(config))
        configs.append(config)
    return configs


def baseline_config(space: Mapping[str, Any]) -> dict[str, Any]:
    """The strong baseline's values for the searched keys: the estimator defaults, class-weighted
    cross-entropy, no augmentation."""
    defaults = {
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "hidden": (256,),
        "dropout": 0.2,
        "class_handling": "balanced",
        "augment": "",
    }
    return {key: defaults[key] for key in space}


def _draw(key: str, value: Any, rng: np.random.Generator, views: bool) -> Any:
    if key == "augment":
        return _draw_augment(value, rng, views)
    if isinstance(value, tuple):
        low, high = value
        if key == "dropout":
            return round(float(rng.uniform(low, high)), 2)
        return float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.2g}")
    return value[int(rng.integers(len(value)))]


def _draw_augment(value: Any, rng: np.random.Generator, views: bool) -> str:
    if value != "auto":
        return value[int(rng.integers(len(value)))]
    kinds = [k for k in AUGMENT_CHOICES if views or k != "views"]
    count = int(rng.choice(len(AUGMENT_MIX), p=AUGMENT_MIX))
    chosen = sorted(rng.choice(len(kinds), size=min(count, len(kinds)), replace=False).tolist())
    parts = []
    for index in chosen:  # in AUGMENT_CHOICES order: views, smote, noise, dropout, mixup
        options = AUGMENT_CHOICES[kinds[index]]
        parts.append(options[int(rng.integers(len(options)))])
    return parse_augmentations(",".join(parts)).spec  # canonical: SMOTE first


def _params(config: Mapping[str, Any]) -> dict[str, Any]:
    """train() keyword arguments of a configuration."""
    params: dict[str, Any] = {}
    for key, value in config.items():
        if key == "class_handling":
            params.update(CLASS_HANDLING[value])
        elif key == "hidden":
            params["hidden"] = tuple(value)
        else:
            params[key] = value
    return params


def describe(config: Mapping[str, Any]) -> str:
    parts = []
    for key, value in config.items():
        if key in ("lr", "weight_decay"):
            value = f"{value:.2g}"
        elif key == "hidden":
            value = "x".join(str(v) for v in value)
        elif key == "augment":
            value = value or "none"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def _record(
    i: int, config: Mapping[str, Any], result: TrainResult, score: float, seconds: float, binary: bool
) -> dict[str, Any]:
    record: dict[str, Any] = {"trial": i, "baseline": i == 0}
    for key, value in config.items():
        record[key] = list(value) if key == "hidden" else value
    record["augment"] = result.card.augment  # canonical, also when fixed
    record["score"] = score
    record.update(result.validation)
    if binary:
        record["threshold"] = result.threshold
    record["epochs"] = len(result.history)
    record["best_epoch"] = result.card.best_epoch
    record["seconds"] = round(seconds, 3)
    return record


# -- small helpers ------------------------------------------------------------------------------------------


def _key(config: Mapping[str, Any]) -> str:
    return json.dumps(json_ready(dict(config)), sort_keys=True)


def _number(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(v)
    )


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _nonempty_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _show(value: float) -> str:
    return "nan" if value != value else f"{value:.4f}"


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return value
