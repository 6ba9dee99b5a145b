"""The model contract: names, dtypes, metadata keys and box conventions.

One source of truth: training and export import these names from here, so a
model written by one side is read by the other without guessing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CONTRACT_VERSION = "1"

INPUT_NAME = "image"  # uint8 [N, H, W, 3] RGB, scaled inside the model
BBOX_OUTPUT = "bbox"  # float32 [N, 4]: x1, y1, x2, y2 relative to the image
DIGIT_OUTPUT = "digit"  # float32 [N, 10]: softmax probabilities, index = digit

NUM_CLASSES = 10
CLASS_NAMES = tuple(str(d) for d in range(NUM_CLASSES))

# How a photo becomes the model input: the whole photo stretched to HxW.
RESIZE_MODE = "stretch"
INPUT_LAYOUT = "NHWC"
INPUT_DTYPE = "uint8"
COLOR_ORDER = "RGB"
BOX_FORMAT = "xyxy-relative"


class Box(NamedTuple):
    """An axis-aligned box x1, y1, x2, y2 (pixels or relative, as stated by the caller)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


def clip_box(box: np.ndarray, width: float = 1.0, height: float = 1.0) -> np.ndarray:
    """Clip x1, y1, x2, y2 box(es) to [0, width] x [0, height]."""
    box = np.asarray(box, dtype=np.float32).copy()
    box[..., 0::2] = np.clip(box[..., 0::2], 0.0, width)
    box[..., 1::2] = np.clip(box[..., 1::2], 0.0, height)
    return box


def relative_to_pixels(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Relative x1, y1, x2, y2 (0..1) to pixels of an image of the given size."""
    box = np.asarray(box, dtype=np.float32)
    scale = np.array([width, height, width, height], dtype=np.float32)
    return box * scale


def pixels_to_relative(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel x1, y1, x2, y2 to relative (0..1) for an image of the given size."""
    box = np.asarray(box, dtype=np.float32)
    scale = np.array([width, height, width, height], dtype=np.float32)
    return box / scale


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of x1, y1, x2, y2 boxes, element-wise over the leading dimensions."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ix1 = np.maximum(a[..., 0], b[..., 0])
    iy1 = np.maximum(a[..., 1], b[..., 1])
    ix2 = np.minimum(a[..., 2], b[..., 2])
    iy2 = np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
