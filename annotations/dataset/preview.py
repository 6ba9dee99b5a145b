"""A grid of dataset samples with their boxes and labels drawn, to check a set by eye."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from digitloc.annotations.dataset.data import DataSet
from digitloc.runtime.fileio import atomic_path

TILE = 96


def write_grid(data: DataSet, path: Path, count: int = 64, kind: str | None = None, seed: int = 0,
               pred_boxes: np.ndarray | None = None, pred_labels: np.ndarray | None = None) -> int:
    """Write a PNG grid of up to ``count`` random samples; returns how many were drawn.

    True boxes are green with the true digit; predicted ones (if given, aligned
    with ``data``) red with the predicted digit.
    """
    index = np.arange(len(data))
    if kind is not None:
        index = index[data.kinds == kind]
    if len(index) == 0:
        raise ValueError(f"no samples{f' of kind {kind}' if kind else ''} to preview")
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(index, size=min(count, len(index)), replace=False))
    cols = min(8, len(index))
    rows = math.ceil(len(index) / cols)
    grid = np.full((rows * TILE, cols * TILE, 3), 255, np.uint8)
    for n, i in enumerate(index):
        tile = cv2.cvtColor(cv2.resize(data.images[i], (TILE, TILE), interpolation=cv2.INTER_NEAREST),
                            cv2.COLOR_RGB2BGR)
        _draw(tile, data.boxes[i], str(int(data.labels[i])), (0, 200, 0), (2, 12))
        if pred_boxes is not None and pred_labels is not None:
            _draw(tile, pred_boxes[i], str(int(pred_labels[i])), (0, 0, 255), (TILE - 12, 12))
        r, c = divmod(n, cols)
        grid[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = tile
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), grid):
            raise ValueError(f"{path}: could not write PNG")
    return len(index)


def _draw(tile: np.ndarray, box: np.ndarray, text: str, colour: tuple[int, int, int],
          at: tuple[int, int]) -> None:
    x1, y1, x2, y2 = (np.asarray(box) * TILE).round().astype(int)
    cv2.rectangle(tile, (x1, y1), (x2 - 1, y2 - 1), colour, 1)
    cv2.putText(tile, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
