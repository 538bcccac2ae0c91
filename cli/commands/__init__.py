"""One module per command, each exposing `command` (a click.Command), loaded only when it is run.

A command's module is its name with '-' as '_' (`train-head` lives in train_head.py).
SUMMARIES is the command list `embedstore --help` shows, in order, without importing any command.
"""

SUMMARIES = {
    "demo": "Run the main job on built-in real tissue: ingest, embed, search, probe, train a head, heatmap.",
    "init": "Create an empty store.",
    "ingest": "Ingest slides, image folders, manifests or point tables into a store.",
    "preview": "Draw a slide's tissue mask and the tiles ingest would keep.",
    "labels": "Import labels of tiles for a task.",
    "tiles": "List tiles with their file, slide, position, groups and labels; export them as CSV/JSON.",
    "info": "What a store holds: sources, files, tiles, tasks, tables.",
    "versions": "List, tag or restore table versions.",
    "compact": "Drop old untagged versions; merge fragments where that frees space.",
    "config": "Show or change a store's settings (version retention).",
    "check": "Verify a store (duplicates, orphans, provenance); --repair fixes.",
    "upgrade": "Upgrade a store written by an older embedstore.",
    "backbones": "List the backbones embedstore can embed with.",
    "embed": "Embed the tiles not embedded yet, per backbone.",
    "index": "Build a similarity index over a backbone's vectors (FAISS or LanceDB).",
    "search": "Find tiles like a few positives; export candidates or a review page.",
    "probe": "Rank backbones on a labelled proxy task (kNN, prototype, linear probes).",
    "train-head": "Train a small classifier on a task from stored vectors (with augmentation, tuning).",
    "predict": "Score every tile with a trained head, into a predictions table.",
    "evaluate": "Score a saved head on a labelled task (AUROC, F1, confusion matrix, intervals).",
    "heatmap": "Draw a head's scores over a slide; export them as GeoJSON for QuPath.",
}
