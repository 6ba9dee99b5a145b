"""Layers of the spatial head, registered so that saved models reload (in safe mode).

The spatial head predicts, for every cell of a stride-16 feature map, how likely the
digit's centre lies there (``centre``: a softmax over cells), a box around that cell and
the digit's class. The two reductions below weigh every cell's box and class by the
centre probabilities, so the model keeps the runtime contract's ``bbox`` [N, 4] and
``digit`` [N, 10] outputs, and the exported graph needs no gather or argmax.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


def _cell_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative x and y of every cell's centre, row-major: two [H * W] arrays."""
    ys, xs = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    return xs.reshape(-1).astype(np.float32), ys.reshape(-1).astype(np.float32)


@keras.saving.register_keras_serializable(package="digitloc")
class CellBoxes(keras.layers.Layer):
    """Per-cell raw box values [N, H, W, 4] and centre probabilities [N, H*W] -> one box [N, 4].

    A cell's box is centred up to ``reach`` cells away from the cell's centre (tanh) and is
    as wide and tall as a sigmoid says (a share of the whole photo), so a small digit gets a
    small box wherever it is.
    """

    def __init__(self, reach: float = 1.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reach = reach

    def call(self, inputs: list[Any]) -> Any:
        raw, centre = inputs
        height, width = int(raw.shape[1]), int(raw.shape[2])
        xs, ys = _cell_centres(height, width)
        raw = ops.reshape(raw, (-1, height * width, 4))
        cx = xs + ops.tanh(raw[..., 0]) * (self.reach / width)
        cy = ys + ops.tanh(raw[..., 1]) * (self.reach / height)
        half_w, half_h = ops.sigmoid(raw[..., 2]) / 2, ops.sigmoid(raw[..., 3]) / 2
        boxes = ops.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)
        return ops.clip(ops.sum(boxes * ops.expand_dims(centre, -1), axis=1), 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reach": self.reach}


@keras.saving.register_keras_serializable(package="digitloc")
class CellClasses(keras.layers.Layer):
    """Per-cell class logits [N, H, W, C] and centre probabilities [N, H*W] -> class
    probabilities [N, C]: each cell's softmax, weighed by its centre probability."""

    def call(self, inputs: list[Any]) -> Any:
        logits, centre = inputs
        height, width, classes = int(logits.shape[1]), int(logits.shape[2]), int(logits.shape[3])
        probs = ops.softmax(ops.reshape(logits, (-1, height * width, classes)), axis=-1)
        return ops.sum(probs * ops.expand_dims(centre, -1), axis=1)
