"""What the detector's int8 export quantizes, in names and numbers: imported by export (which must not
load Keras to read it) and by ``train.detector``'s snap onto the int8 grid."""

from __future__ import annotations

import numpy as np

# Name parts of the layers the int8 export keeps in float (the neck's 1x1 laterals and adds, the heads and
# the decoding; export.detector says how they were chosen). The neck's 3x3 neck_conv is int8 all the same:
# tf2onnx folds its BatchNorm into it and renames it, so no name part reaches it (``int8_convolutions``).
DETECTOR_FLOAT = ("neck", "heat_conv", "box_conv", "head_conv", "heat_logits", "box_logits", "maps", "decode")
INT8_WEIGHT_LEVELS = 64  # the int8 export's weights: per output channel, symmetric, -64..64 (reduce_range)


def snap_to_grid(weights: np.ndarray, axis: int, levels: int = INT8_WEIGHT_LEVELS) -> np.ndarray:
    """``weights`` rounded onto the int8 export's grid: per output channel (``axis``), ``levels`` steps of the
    channel's largest magnitude each way (onnxruntime's symmetric int8: step = absmax / levels). A channel of
    zeros stays as it is. Per-channel scaling (a folded BatchNorm) moves the grid with the channel, so a kernel
    snapped before the folding is still on the grid after it."""
    w = np.asarray(weights, np.float64)
    moved = np.moveaxis(w, axis, 0)
    step = np.abs(moved).reshape(len(moved), -1).max(1).reshape(-1, *([1] * (moved.ndim - 1))) / levels
    grid = np.where(step > 0, np.clip(np.round(moved / np.where(step > 0, step, 1)), -levels, levels) * step, moved)
    return np.moveaxis(grid, 0, axis).astype(np.float32)
