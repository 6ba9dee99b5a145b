"""Charts of a run that need its Keras model: loss and accuracy per head, confusion matrix, validation
predictions and failures (the charts without Keras live in ``digitloc.annotations.charts``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.charts import plot_confusion, pyplot, save_figure
from digitloc.annotations.dataset.data import KIND_REAL, DataSet
from digitloc.annotations.metrics import failure_index
from digitloc.train.model import keras_predict
from digitloc.train.record import RunRecord


def plot_run(run_dir: Path, model: Any, val_set: DataSet) -> list[Path]:
    """Write curves.png, confusion.png, val-predictions.png and failures.png (every real
    validation photo with a wrong digit or a missed box) into ``run_dir``."""
    from digitloc.annotations.dataset.preview import write_grid

    run = RunRecord(run_dir)
    history = run.history()
    epochs = [int(h["epoch"]) + 1 for h in history]
    fig, axes = pyplot().subplots(1, 3, figsize=(15, 4))
    for ax, (title, keys) in zip(axes, [
        ("loss", ["loss", "val_loss", "bbox_loss", "val_bbox_loss", "digit_loss", "val_digit_loss"]),
        ("class accuracy", ["digit_accuracy", "val_digit_accuracy", "val_real_accuracy"]),
        ("box mean IoU", ["bbox_iou", "val_bbox_iou", "val_real_iou"]),
    ], strict=True):
        for key in keys:
            if key in history[0]:
                ax.plot(epochs, [h[key] for h in history], label=key, marker=".")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    written = [save_figure(fig, run_dir / "curves.png")]

    evaluation = run.evaluation()
    group = "heldout_real" if "heldout_real" in evaluation else "val_real"
    if group in evaluation:
        written.append(plot_confusion(np.array(evaluation[group]["confusion_matrix"]), run_dir / "confusion.png",
                                      f"{group}: accuracy {evaluation[group]['class_accuracy']:.3f}"))
    real = val_set.select(val_set.kinds == KIND_REAL)
    if len(real):
        boxes, probs = keras_predict(model, real.images)  # once: the grid shows the first 64
        shown = np.arange(len(real)) < 64
        path = run_dir / "val-predictions.png"
        write_grid(real.select(shown), path, count=64, pred_boxes=boxes[shown], pred_labels=probs[shown].argmax(1))
        written.append(path)
        failures = failure_index(real.boxes, real.labels, boxes, probs)
        if len(failures):
            path = run_dir / "failures.png"
            write_grid(real.select(failures), path, count=len(failures), pred_boxes=boxes[failures],
                       pred_labels=probs[failures].argmax(1))
            written.append(path)
    return written
