"""Plots people look at after training and evaluation, drawn with matplotlib's Agg canvas.

- ``curves.png`` (:func:`plot_training_curves`): losses, learning rate and evaluation metrics
  against the step, read from a run's ``metrics.csv`` and ``eval.csv``, so a resumed run draws
  its whole history.
- ``pr_curves.png`` (:func:`plot_pr_curves`): COCO precision-recall at IoU 0.5 and averaged over
  0.5:0.95, over all classes and for the classes with the lowest AP, from the precision array a
  COCO :class:`~scaledet.eval.base.EvalResult` carries in ``details``.
- ``per_class_ap.png`` (:func:`plot_per_class_ap`): one bar per class.

Each figure is drawn on its own ``Figure`` + ``FigureCanvasAgg`` (no pyplot state, no display)
at a fixed size in pixels, and replaces its file atomically.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from scaledet.eval.base import EvalResult
from scaledet.utils.atomic import atomic_path

DPI = 100
CURVES_SIZE = (1500, 450)  # pixels
PR_SIZE = (1200, 500)
AP_BAR_WIDTH = 800
WORST_CLASSES = 3
_NOT_LOSSES = {"step", "lr", "images_per_s"}
# headline metrics drawn against the step when the evaluation reports them (else every column)
_HEADLINE_METRICS = ("AP", "AP50", "AP75", "mAP", "mIoU")


def _figure(size_px: tuple[int, int]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    # a fixed-size canvas (no tight bbox), written atomically: a reader never sees half a PNG
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a CSV log as float arrays (a row per record; empty when the file is absent)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {key: np.array([float(row[key]) if row.get(key) not in (None, "") else math.nan for row in rows])
            for key in rows[0]}


def plot_training_curves(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """``curves.png`` of a run folder: losses (log scale), learning rate, metrics against the step."""
    run_dir = Path(run_dir)
    train, evaluation = _read_csv(run_dir / "metrics.csv"), _read_csv(run_dir / "eval.csv")
    figure = _figure(CURVES_SIZE)
    losses, rate, metrics = figure.subplots(1, 3)
    if train:
        for key in (k for k in train if k not in _NOT_LOSSES and not k.startswith("num_")):
            losses.plot(train["step"], train[key], label=key, linewidth=2 if key == "loss" else 1)
        if np.nanmin([np.nanmin(train[k]) for k in train if "loss" in k] or [0]) > 0:
            losses.set_yscale("log")
        rate.plot(train["step"], train["lr"], color="tab:green")
        losses.legend(fontsize=8)
    shown = [k for k in _HEADLINE_METRICS if k in evaluation] or [k for k in evaluation if k != "step"]
    for key in shown:
        metrics.plot(evaluation["step"], evaluation[key], marker="o", label=key)
    if evaluation:
        metrics.legend(fontsize=8)
    for axes, title in ((losses, "training losses"), (rate, "learning rate"), (metrics, "evaluation")):
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.12, top=0.9, wspace=0.25)
    return _save(figure, Path(path) if path else run_dir / "curves.png")


def _mean_precision(precision: np.ndarray) -> np.ndarray:
    """Precision per recall threshold, averaged over what is defined (COCO marks the rest -1)."""
    valid = precision > -1
    total = np.where(valid, precision, 0.0).sum(axis=tuple(range(1, precision.ndim)))
    count = valid.sum(axis=tuple(range(1, precision.ndim)))
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def plot_pr_curves(result: EvalResult, path: str | Path) -> Path:
    """Precision against recall at IoU 0.5 and over 0.5:0.95: all classes, and the
    ``WORST_CLASSES`` classes of lowest AP (those with objects)."""
    details: dict[str, Any] = result.details
    precision, recall = details["precision"], details["recall_thresholds"]  # [T, R, K], [R]
    ious = np.asarray(details["iou_thresholds"])
    per_class = details["per_class_AP"]
    ranked = sorted((ap, k, name) for k, (name, ap) in enumerate(per_class.items()) if not math.isnan(ap))
    worst = ranked[:WORST_CLASSES]
    figure = _figure(PR_SIZE)
    for axes, (title, rows) in zip(figure.subplots(1, 2), (("IoU 0.5", np.isclose(ious, 0.5)),
                                                          ("IoU 0.5:0.95", np.ones(len(ious), bool)))):
        chosen = precision[rows]  # [T', R, K]
        overall = _mean_precision(chosen.transpose(1, 0, 2))
        axes.plot(recall, overall, color="black", linewidth=2.5, label=f"all classes (AP {np.nanmean(overall):.3f})")
        for _, k, name in worst:
            curve = _mean_precision(chosen[:, :, k].T)
            axes.plot(recall, curve, linewidth=1.2, label=f"{name} (AP {np.nanmean(curve):.3f})")
        axes.set_title(f"precision-recall, {title}")
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="lower left")
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.9, wspace=0.2)
    return _save(figure, Path(path))


def per_class_ap_height(num_classes: int) -> int:
    """Pixel height of the per-class AP chart: room for one readable bar per class."""
    return max(300, 90 + 18 * num_classes)


def plot_per_class_ap(result: EvalResult, path: str | Path) -> Path:
    """A horizontal bar per class with its AP (a class without objects shows no bar)."""
    per_class = result.details["per_class_AP"]
    names = [name if not math.isnan(ap) else f"{name} (no objects)" for name, ap in per_class.items()]
    values = [0.0 if math.isnan(ap) else ap for ap in per_class.values()]
    figure = _figure((AP_BAR_WIDTH, per_class_ap_height(len(names))))
    axes = figure.subplots()
    positions = np.arange(len(names))
    axes.barh(positions, values, color="tab:blue")
    axes.set_yticks(positions, names, fontsize=8)
    axes.set_ylim(len(names) - 0.5, -0.5)  # first class on top, no empty margins
    axes.set_xlim(0, 1)
    axes.set_xlabel("AP")
    axes.set_title("AP per class")
    axes.grid(axis="x", alpha=0.3)
    figure.subplots_adjust(left=0.25, right=0.97, bottom=60 / figure.bbox.height, top=1 - 30 / figure.bbox.height)
    return _save(figure, Path(path))


def write_evaluation_plots(result: EvalResult, folder: str | Path, suffix: str = "") -> list[Path]:
    """``pr_curves{suffix}.png`` (COCO results) and ``per_class_ap{suffix}.png`` in ``folder``;
    the files this result has what it takes to draw."""
    folder = Path(folder)
    written = []
    if "precision" in result.details:
        written.append(plot_pr_curves(result, folder / f"pr_curves{suffix}.png"))
    if result.details.get("per_class_AP"):
        written.append(plot_per_class_ap(result, folder / f"per_class_ap{suffix}.png"))
    return written
