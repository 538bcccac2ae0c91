"""Classification heads trained on stored embeddings: small, cheap, tuned hard, strong on scarce classes.

    import embedstore, heads
    store = embedstore.open("mystore")
    result = heads.train(store, "tf_efficientnet_lite0.in1k", "tumour", head="mlp",
                         augment="noise:0.1,mixup:0.4,smote:5", name="tumour-mlp")
    heads.predict(store, "tumour-mlp")                       # table pred__tumour-mlp, incremental
    print(heads.evaluate(store, "tumour-mlp", "tumour-external").summary())  # held-out scores
    heads.heatmap(store, "tumour-mlp", "slide-1", "slide-1.png")
    best = heads.tune(store, "tf_efficientnet_lite0.in1k", "tumour", 20, name="tumour-tuned")

`LinearHead` and `MLPHead` are scikit-learn estimators on arrays too. Training streams Arrow batches from
the store (never the whole table). heads uses embedstore's API; embedstore never imports heads. The
names below load on first use, so that `import heads` stays light (no torch until it is needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from embedstore.core.lazy import lazy_exports
from embedstore.core.moved import alias_modules

from .errors import HeadsError

alias_modules({"heads.data": "heads.tile_batches", "heads.demo": "heads.demo_head"})  # old paths, one release

if TYPE_CHECKING:
    from .augment import AugmentationPipeline, parse_augmentations
    from .card import HeadCard, list_heads, load_head, read_card
    from .estimators import LinearHead, MLPHead
    from .evaluation import EvaluationReport, evaluate
    from .prediction import export_top, predict
    from .spatial import export_geojson, heatmap
    from .training import TrainResult, train
    from .tuning import TuneResult, tune

_LAZY = {
    "AugmentationPipeline": ".augment",
    "parse_augmentations": ".augment",
    "HeadCard": ".card",
    "list_heads": ".card",
    "load_head": ".card",
    "read_card": ".card",
    "LinearHead": ".estimators",
    "MLPHead": ".estimators",
    "EvaluationReport": ".evaluation",
    "evaluate": ".evaluation",
    "export_top": ".prediction",
    "predict": ".prediction",
    "export_geojson": ".spatial",
    "heatmap": ".spatial",
    "TrainResult": ".training",
    "train": ".training",
    "TuneResult": ".tuning",
    "tune": ".tuning",
}

__all__ = [
    "HeadsError",
    "AugmentationPipeline",
    "parse_augmentations",
    "HeadCard",
    "list_heads",
    "load_head",
    "read_card",
    "LinearHead",
    "MLPHead",
    "EvaluationReport",
    "evaluate",
    "export_top",
    "predict",
    "export_geojson",
    "heatmap",
    "TrainResult",
    "train",
    "TuneResult",
    "tune",
]


__getattr__ = lazy_exports(__name__, _LAZY)
