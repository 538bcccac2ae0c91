"""One PNG of an evaluation: ROC curves, precision-recall curves and the confusion matrix, side by side.

Drawn with Pillow (embedstore does not depend on matplotlib). A binary head gets its positive class's
curves; a multi-class head one curve per class (one-vs-rest).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from embedstore.core.validation import output_file

from .evaluation import EvaluationReport

PANEL, MARGIN = 520, 70  # each panel's side and its axes' margin, in pixels
COLOURS = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233)]


def curve_points(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, precision) at each distinct score, highest first."""
    order = np.argsort(-score, kind="mergesort")
    ordered = score[order]
    last = np.r_[ordered[1:] != ordered[:-1], True]
    hits = np.cumsum(positive[order])[last]
    taken = np.flatnonzero(last) + 1
    positives, negatives = max(int(positive.sum()), 1), max(len(positive) - int(positive.sum()), 1)
    return (taken - hits) / negatives, hits / positives, hits / taken


def plot_evaluation(report: EvaluationReport, path: str | Path) -> Path:
    """Write the evaluation's ROC, precision-recall and confusion-matrix panels as one PNG at `path`."""
    out = output_file("--plot", path, make_folder=True)
    image = Image.new("RGB", (3 * PANEL, PANEL + 60), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=20), ImageFont.load_default(size=16)
    title = (
        f"head {report.head} on task {report.task}: {report.tiles} tiles, {report.groups} {report.group_by}s"
    )
    draw.text((20, 16), title, fill="black", font=font)
    classes = [1] if report.positive_class is not None else range(len(report.classes))
    roc, pr = (
        _axes(draw, 0, "false positive rate", "true positive rate", small),
        _axes(draw, PANEL, "recall", "precision", small),
    )
    for i, c in enumerate(classes):
        positive = report.y == c
        if not positive.any() or positive.all():
            continue
        fpr, tpr, precision = curve_points(positive, report.probabilities[:, c])
        colour = COLOURS[i % len(COLOURS)]
        draw.line([roc(0, 0), *(roc(a, b) for a, b in zip(fpr, tpr, strict=True))], fill=colour, width=3)
        draw.line([pr(0, 1), *(pr(a, b) for a, b in zip(tpr, precision, strict=True))], fill=colour, width=3)
        draw.text((MARGIN + 250, 400 + 22 * i), report.classes[c], fill=colour, font=small)
        draw.text((PANEL + MARGIN + 14, 400 + 22 * i), report.classes[c], fill=colour, font=small)
    draw.line([roc(0, 0), roc(1, 1)], fill=(170, 170, 170), width=1)
    auroc, ap = report.metrics["auroc"], report.metrics["average_precision"]
    draw.text((MARGIN, 60), f"ROC: AUROC {auroc.value:.3f}", fill="black", font=font)
    draw.text((PANEL + MARGIN, 60), f"precision-recall: AP {ap.value:.3f}", fill="black", font=font)
    _confusion(draw, report, 2 * PANEL, font, small)
    image.save(out)
    return out


def _axes(draw: ImageDraw.ImageDraw, left: int, x_name: str, y_name: str, font):
    """Draw unit axes in the panel at `left`; returns the (x, y) -> pixel map of its plot area."""
    x0, y0, side = left + MARGIN, 60 + PANEL - MARGIN, PANEL - MARGIN - 30
    y_top = y0 - side + 30
    height = y0 - y_top

    def at(x: float, y: float) -> tuple[float, float]:
        return x0 + x * side, y0 - y * height

    draw.rectangle([at(0, 1), at(1, 0)], outline="black", width=1)
    for tick in (0.0, 0.5, 1.0):
        draw.text((at(tick, 0)[0] - 10, y0 + 6), f"{tick:.1f}", fill="black", font=font)
        draw.text((x0 - 36, at(0, tick)[1] - 8), f"{tick:.1f}", fill="black", font=font)
    draw.text((x0 + side / 2 - 60, y0 + 28), x_name, fill="black", font=font)
    draw.text((left + 6, y_top - 24), y_name, fill="black", font=font)
    return at


def _confusion(draw: ImageDraw.ImageDraw, report: EvaluationReport, left: int, font, small) -> None:
    """The confusion matrix as shaded cells with counts: rows true class, columns predicted."""
    matrix = np.asarray(report.confusion, dtype=np.float64)
    k = len(report.classes)
    top, side = 150, PANEL - 2 * MARGIN - 40
    cell = side / k
    x0 = left + MARGIN + 40
    draw.text((left + MARGIN, 60), "confusion matrix", fill="black", font=font)
    draw.text((x0, top - 50), "predicted class", fill="black", font=small)
    draw.text((left + 10, top - 24), "true class", fill="black", font=small)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    for r in range(k):
        draw.text(
            (left + 10, top + r * cell + cell / 2 - 8), report.classes[r][:10], fill="black", font=small
        )
        draw.text((x0 + r * cell + 4, top - 24), report.classes[r][:10], fill="black", font=small)
        for c in range(k):
            shade = int(255 - 180 * share[r, c])
            box = [x0 + c * cell, top + r * cell, x0 + (c + 1) * cell, top + (r + 1) * cell]
            draw.rectangle(box, fill=(shade, shade, 255), outline="black")
            ink = "white" if share[r, c] > 0.6 else "black"
            text = f"{int(matrix[r, c])}"
            draw.text((box[0] + cell / 2 - 6 * len(text), box[1] + cell / 2 - 10), text, fill=ink, font=font)
    if report.threshold is not None:
        note = f"at threshold {report.threshold:.3f} on p({report.positive_class})"
        draw.text((left + MARGIN, top + side + 16), note, fill="black", font=small)
