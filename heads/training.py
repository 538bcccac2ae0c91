"""Training a head on a task from the store: split, stream, stop early, tune the threshold, save.

    result = train(store, "uni", "tumour", head="mlp", augment="noise:0.1,views", epochs=30)
    result.card.summary(); result.validation["auroc"]; result.threshold

The task's labelled tiles are split by group (no patient / slide on both sides); the training tiles'
vectors stream from the backbone's table (pinned at its version when training starts) in shuffled
batches through the one training loop (`heads.loop`, which fit and partial_fit use too); after each epoch
the validation tiles are streamed and scored (`embedstore.evaluate.split_scores`), and training stops
after `patience` epochs without improvement, keeping the best epoch's weights. A binary head's threshold
is then tuned on the validation tiles for the positive class's F1. The head is saved with its card under
`<store>/heads/<name>/`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tqdm.auto import tqdm

from embedstore import __version__
from embedstore.core.location import StorePath
from embedstore.core.reports import JsonReport
from embedstore.core.schema import LABELS
from embedstore.core.validation import FileName, Name
from embedstore.embeddings import EmbeddingTable
from embedstore.storage.catalog import Catalog

from .card import (
    HeadCard,
    StoreArg,
    check_name,
    head_class,
    json_ready,
    open_store,
    refuse_existing,
    save_head,
    split_table,
)
from .errors import HeadsError
from .loop import EarlyStopping, Epoch, NoValidationRows, Run, train_epochs
from .options import DEFAULTS, TRAIN_DEFAULTS
from .tile_batches import (
    READ_BATCH,
    SAMPLE_ROWS,
    SHUFFLE_BUFFER,
    BatchStream,
    StreamCounters,
    TileSplit,
    augmentation_sample,
    checked,
    require_embeddings,
    split_tiles,
)

Say = Callable[[str], None]


@dataclass
class TrainResult(JsonReport):
    """A trained (and saved) head: the estimator with the best epoch's weights, its card, per-epoch
    history, validation scores at the best epoch, and the threshold (0.5 for multi-class heads)."""

    estimator: Any
    card: HeadCard
    history: list[dict[str, float]]
    validation: dict[str, float]
    threshold: float
    path: StorePath
    split: TileSplit
    counters: StreamCounters  # what the training stream read and held
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return self.card.summary()

    def to_dict(self) -> dict[str, Any]:
        """The card, per-epoch history and notes (what `train-head --json` writes), with the validation
        scores, threshold and where the head was saved."""
        return {
            "card": self.card.to_dict(),
            "history": self.history,
            "notes": self.notes,
            "validation": self.validation,
            "threshold": self.threshold,
            "path": str(self.path),
        }


def default_name(task: str, backbone: str, head: str) -> str:
    """`<task>-<backbone>-<kind>` as a valid head name: characters a head name refuses replaced by '_',
    '..' by '.', cut to `FileName`'s length (a long backbone key would make too long a name)."""
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", f"{task}-{backbone}-{head}"))
    return name.lstrip("._-")[: FileName().max_length] or "head"


def checked_start(
    catalog: Catalog, backbone: str, task: str, head: str, name: str | None, overwrite: bool
) -> tuple[Any, str, str]:
    """The checks `train` and `tune` open with, in the order a user meets them: a writable store, the
    backbone's and task's names, the head kind, the head's name (free unless `overwrite`), then the
    backbone's embeddings. Returns the estimator class, the head's name and the embedding table."""
    catalog.require_writable()
    checked("--backbone", backbone, Name())
    checked("--task", task, Name())
    cls = head_class(head)
    name = check_name(name if name is not None else default_name(task, backbone, head))
    if not overwrite:
        refuse_existing(catalog, name)
    return cls, name, require_embeddings(catalog, backbone)


def train(
    store: StoreArg,
    backbone: str,
    task: str,
    *,
    name: str | None = None,
    head: str = TRAIN_DEFAULTS["head"],
    augment: str = DEFAULTS["augment"],
    group_by: str | None = TRAIN_DEFAULTS["group_by"],
    validation: float = TRAIN_DEFAULTS["validation"],
    seed: int = DEFAULTS["seed"],
    epochs: int | None = None,
    batch_size: int | None = None,
    overwrite: bool = TRAIN_DEFAULTS["overwrite"],
    progress: bool = False,
    split: TileSplit | None = None,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    say: Say | None = None,
    **head_params: Any,
) -> TrainResult:
    """Train a `head` ("linear" | "mlp") on `task` over `backbone`'s vectors and save it as `name`
    (default `<task>-<backbone>-<head>`); see the module doc.

    epochs, batch_size and `head_params` (lr, weight_decay, class_weight, loss, focal_gamma, patience,
    early_stopping, device; hidden, dropout, norm for mlp) go to the estimator, whose defaults apply
    when they are not given. `split`: a TileSplit to reuse (tuning), else one is made from group_by,
    validation and seed. HeadsError (one line) for an unknown task or head kind, one class, a backbone
    without embeddings, a name that exists without `overwrite`, or a bad parameter.
    """
    say = say or (lambda _: None)
    store = open_store(store)
    cls, name, table = checked_start(store, backbone, task, head, name, overwrite)
    estimator, pipeline = _estimator(cls, head, augment, seed, epochs, batch_size, head_params)
    embeddings = EmbeddingTable.of(store, table)  # one version for the provenance, views and vectors
    table_version = embeddings.version
    provenance = embeddings.provenance
    query = embeddings.query().columns()
    labels_version = int(store.dataset(LABELS).version)  # before the split reads them
    if split is None:
        split = split_tiles(store, task, backbone, group_by, validation, seed)
    elif split.task != task:
        raise HeadsError(f"the split given is of task {split.task!r}, not {task!r}")
    estimator.check_memory(provenance.dim, len(split.classes))  # before reading vectors
    notes = list(split.notes)
    views = pipeline.uses_views and embeddings.has_views()
    if pipeline.uses_views and not views:
        notes.append(
            f"augment 'views': {table} holds no stored views, so every epoch reads view 0; embed views "
            f"with `embedstore embed {store.root} --backbone {backbone} --views N`"
        )
    for note in notes:
        say(note)
    started = time.perf_counter()
    classes = split.classes
    train_codes, validation_codes = split.train_codes(), split.validation_codes()
    say(f"reading a sample of up to {SAMPLE_ROWS} training vectors (input scaling, augmentation statistics)")
    sample = augmentation_sample(query, train_codes, len(classes), seed=seed)
    estimator._begin(classes, provenance.dim, split.class_counts(), augmentation_sample=sample)
    del sample
    stream = BatchStream(
        query,
        train_codes,
        estimator.batch_size,
        shuffle_buffer=shuffle_buffer,
        views=views,
        seed=seed,
    )
    checking = BatchStream(query, validation_codes, READ_BATCH, shuffle=False)
    run = _run(estimator, stream, checking, name, progress)
    history = [_record(epoch, classes) for epoch in run.epochs]
    best = estimator._keep_best(run)
    threshold = best.pop("threshold", 0.5)
    assert run.best is not None and run.best.scores is not None  # kept by a run with validation
    scores = {**_named(run.best.scores, classes), **best}
    estimator.history_ = history
    estimator.validation_ = {"epoch": run.best.number, "metric": estimator.early_stopping, **scores}
    estimator.n_iter_ = len(history)
    card = HeadCard(
        name=name,
        kind=head,
        backbone=provenance.backbone,
        weights_sha256=provenance.weights_sha256,
        table=table,
        table_version=table_version,
        task=task,
        classes=list(classes),
        positive_class=classes[1] if len(classes) == 2 else None,
        threshold=threshold,
        params=json_ready(estimator.get_params(deep=False)),
        augment=pipeline.spec,
        validation=scores,
        group_by=split.group_by,
        tiles_train=len(split.train_ids),
        tiles_validation=len(split.validation_ids),
        created=datetime.now(UTC).isoformat(timespec="microseconds"),
        versions=_versions(),
        dim=provenance.dim,
        epochs=len(history),
        best_epoch=run.best.number,
        notes=notes,
        labels_version=labels_version,
    )
    record = split_table(split.train_ids.sorted, split.validation_ids.sorted)
    path = save_head(store, card, estimator, overwrite=overwrite, split=record)
    say(f"{card.summary()} ({time.perf_counter() - started:.1f} s); saved in {path}")
    return TrainResult(estimator, card, history, scores, threshold, path, split, stream.counters, notes)


def _run(estimator, stream: BatchStream, checking: BatchStream, name: str, progress: bool) -> Run:
    """The one training loop (heads.loop) over the streamed batches, with a progress bar."""
    bar = tqdm(
        total=estimator.epochs * len(stream),
        desc=f"train {name}",
        unit="tile",
        disable=not progress,
        leave=False,
    )

    def show(epoch: Epoch, stopper: EarlyStopping | None) -> None:
        assert stopper is not None and epoch.scores is not None
        shown = {"epoch": epoch.number, "train_loss": f"{epoch.train_loss:.4f}"}
        bar.set_postfix({**shown, f"val_{stopper.metric}": f"{epoch.scores[stopper.metric]:.4f}"})

    try:
        run = train_epochs(
            estimator, stream, checking, epochs=estimator.epochs, on_batch=bar.update, on_epoch=show
        )
    except NoValidationRows:
        raise HeadsError(
            "none of the validation tiles has a vector in the backbone's table; run `embedstore embed` again"
        ) from None
    finally:
        bar.close()
    if run.stopped:
        bar.total = bar.n
    return run


def _record(epoch: Epoch, classes: list[str]) -> dict[str, float]:
    """A history row: epoch, train_loss, validation_<score> (classes by name), seconds."""
    record = {"epoch": epoch.number, "train_loss": epoch.train_loss}
    record.update({f"validation_{k}": v for k, v in _named(epoch.scores or {}, classes).items()})
    record["seconds"] = epoch.seconds
    return record


def _estimator(cls, head: str, augment: str, seed: int, epochs, batch_size, params: dict[str, Any]):
    given = {"augment": augment, "seed": seed, **params}
    if epochs is not None:
        given["epochs"] = epochs
    if batch_size is not None:
        given["batch_size"] = batch_size
    valid = sorted(cls().get_params(deep=False))
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise HeadsError(
            f"{head} head has no parameter {', '.join(unknown)}; its parameters: {', '.join(valid)}"
        )
    estimator = cls(**given)
    return estimator, estimator.check_params()  # fail before reading any vector (begin checks again)


def _named(scores: dict[str, float], classes: list[str]) -> dict[str, float]:
    """`f1:<code>` keys as `f1:<class name>`."""
    out = {}
    for key, value in scores.items():
        if key.startswith("f1:") and key[3:].isdigit() and int(key[3:]) < len(classes):
            key = f"f1:{classes[int(key[3:])]}"
        out[key] = float(value)
    return out


def _versions() -> dict[str, str]:
    import sklearn
    import torch

    return {"embedstore": __version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__}
