"""Charts of a run: loss and accuracy per head, confusion matrix, validation predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.dataset.data import KIND_REAL, DataSet
from digitloc.runtime.fileio import atomic_path
from digitloc.train.record import RunRecord


def plot_run(run_dir: Path, model: Any, val_set: DataSet) -> list[Path]:
    """Write curves.png, confusion.png, val-predictions.png and failures.png (every real
    validation photo with a wrong digit or a missed box) into ``run_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from digitloc.annotations.dataset.preview import write_grid
    from digitloc.train.evaluate import failure_index, keras_predict

    run = RunRecord(run_dir)
    history = run.history()
    epochs = [int(h["epoch"]) + 1 for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
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


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im)
    return save_figure(fig, path)


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
