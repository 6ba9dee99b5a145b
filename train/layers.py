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


STRIDE = 4  # the detector's map: one cell per 4x4 input pixels
SIDE_SCALE = 2.0 * STRIDE  # a detector box side is exp(logit) * SIDE_SCALE pixels from the cell centre


@keras.saving.register_keras_serializable(package="digitloc")
class DecodeDetections(keras.layers.Layer):
    """The detector's maps [N, H/4, W/4, 10 + 4] to its top-K digits: boxes, scores, classes, and the
    most confident digit's bbox and class probabilities. Peaks are picked across classes (a 3x3
    max-pool of each cell's best class), so one place yields one digit."""

    def __init__(self, input_size: tuple[int, int], top_k: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_size, self.top_k = tuple(input_size), int(top_k)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "input_size": list(self.input_size), "top_k": self.top_k}

    def call(self, maps: Any) -> dict[str, Any]:
        import tensorflow as tf

        from digitloc.runtime.contract import (
            BBOX_OUTPUT,
            BOXES_OUTPUT,
            CLASSES_OUTPUT,
            DIGIT_OUTPUT,
            NUM_CLASSES,
            SCORES_OUTPUT,
        )

        h, w = self.input_size
        gh, gw = h // STRIDE, w // STRIDE
        heat = tf.sigmoid(maps[..., :NUM_CLASSES])
        sides = tf.exp(tf.clip_by_value(maps[..., NUM_CLASSES:], -4.0, 4.0)) * SIDE_SCALE
        best = tf.reduce_max(heat, axis=-1)
        pooled = tf.nn.max_pool2d(best[..., None], 3, 1, "SAME")[..., 0]
        peaks = best * tf.cast(best >= pooled, best.dtype)
        scores, index = tf.math.top_k(tf.reshape(peaks, (-1, gh * gw)), k=self.top_k)
        heat_k = tf.gather(tf.reshape(heat, (-1, gh * gw, NUM_CLASSES)), index, batch_dims=1)
        sides_k = tf.gather(tf.reshape(sides, (-1, gh * gw, 4)), index, batch_dims=1)
        cx = (tf.cast(index % gw, tf.float32) + 0.5) * STRIDE
        cy = (tf.cast(index // gw, tf.float32) + 0.5) * STRIDE
        boxes = tf.stack([(cx - sides_k[..., 0]) / w, (cy - sides_k[..., 1]) / h,
                          (cx + sides_k[..., 2]) / w, (cy + sides_k[..., 3]) / h], axis=-1)
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
        classes = tf.cast(tf.argmax(heat_k, axis=-1), tf.int32)
        first = heat_k[:, 0, :]
        digit = first / (tf.reduce_sum(first, axis=-1, keepdims=True) + 1e-6)
        return {BOXES_OUTPUT: boxes, SCORES_OUTPUT: scores, CLASSES_OUTPUT: classes,
                BBOX_OUTPUT: boxes[:, 0, :], DIGIT_OUTPUT: digit}


@keras.saving.register_keras_serializable(package="digitloc")
class ActivationNoise(keras.layers.Layer):
    """Uniform noise of ``scale`` int8 steps (``step``: the tensor's calibrated range / 255) added in
    training only, so the model learns decisions that int8's rounding does not move (the int8 file
    then reads the same numbers as fp32 more often). The identity at inference: nothing is exported."""

    def __init__(self, step: float, scale: float = 1.0, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step, self.scale, self.seed = float(step), float(scale), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x: Any, training: bool | None = None) -> Any:
        if not training:
            return x
        noise = keras.random.uniform(ops.shape(x), -0.5, 0.5, seed=self.seed_generator)
        return x + noise * (self.step * self.scale)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "step": self.step, "scale": self.scale, "seed": self.seed}
