"""Charts shared by train, export and benchmarks: the atomic PNG writer, the accuracy / IoU panels,
the framing chart and the confusion matrix.

matplotlib (extra `train`) is imported inside each function, so importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitloc.runtime.fileio import atomic_path


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    pyplot().close(fig)
    return path


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> Path:
    """The confusion matrix (rows true, columns predicted) with its counts."""
    fig, ax = pyplot().subplots(figsize=(6, 5))
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


def framing_chart(results: dict[str, dict], path: Path) -> Path:
    """Accuracy and mean IoU per digit height share, one line per model, the constant box dashed."""
    series = {name: [(r["share"], r["class_accuracy"], r["mean_iou"]) for r in res["per_share"]]
              for name, res in results.items()}
    first = next(iter(results.values()))["per_share"]
    return accuracy_iou_chart(series, path, "digit height / photo height",
                              "by framing (held-out one-digit photos, re-framed)",
                              constant=[(r["share"], r["constant_box_iou"]) for r in first])


def accuracy_iou_chart(series: dict[str, list[tuple[float, float, float]]], path: Path, xlabel: str, title: str,
                       constant: list[tuple[float, float]] | None = None) -> Path:
    """Two panels, class accuracy and mean IoU against x, one line per name of ``series`` (its
    points are x, accuracy, IoU); ``constant`` (x, IoU), the constant-box baseline, dashed."""
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.2))
    for name, points in series.items():
        axes[0].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        axes[1].plot([p[0] for p in points], [p[2] for p in points], marker="o", label=name)
    if constant:
        axes[1].plot([c[0] for c in constant], [c[1] for c in constant], "k--", label="constant box")
    for ax, panel in zip(axes, ("class accuracy", "mean IoU"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_title(f"{panel} {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylim(0, 1)
    axes[1].set_ylim(0, 1)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
