"""The one preprocessing function, shared by dataset building, training and inference.

A photo (OpenCV BGR, any depth or channel count) becomes an RGB uint8 array of the
model's input size by stretching the whole photo: relative boxes stay valid.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert an OpenCV image (gray, BGR, BGRA; uint8/uint16/float) to RGB uint8.

    16-bit images are scaled down, float images are taken as 0..1, grayscale is
    repeated to three channels and alpha is dropped.
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError("empty image")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3:
        raise ValueError(f"unsupported image shape {image.shape}")
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"unsupported channel count {channels}")


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stretch an RGB uint8 image to (height, width), area-averaging when shrinking."""
    height, width = size
    src_h, src_w = rgb.shape[:2]
    interp = cv2.INTER_AREA if (src_h >= height and src_w >= width) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interp)


def preprocess(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV image (BGR as cv2.imread gives) to the model input: RGB uint8 [H, W, 3].

    An 8-bit photo is resized before its channels are reordered: the same pixels (both steps act
    per channel), without a full-size copy of a large photo."""
    image = np.asarray(image)
    if image.dtype == np.uint8 and image.size and image.ndim in (2, 3) and (image.ndim == 2 or image.shape[2] in (3, 4)):
        return to_rgb_uint8(resize_rgb(image, size))
    return resize_rgb(to_rgb_uint8(image), size)


LETTERBOX_FILL = 114  # the grey a letterboxed input is padded with (the detector was trained on it)


def letterbox_geometry(src_hw: tuple[int, int], size: tuple[int, int]) -> tuple[float, int, int, int, int]:
    """Scale and placement that fit a (height, width) photo into ``size`` with its aspect kept:
    (scale, x offset, y offset, scaled width, scaled height). Relative model boxes map back to
    photo pixels by ``(box * [W, H] - [x, y]) / scale``."""
    height, width = size
    src_h, src_w = src_hw
    scale = min(width / src_w, height / src_h)
    new_w, new_h = max(1, min(width, round(src_w * scale))), max(1, min(height, round(src_h * scale)))
    return scale, (width - new_w) // 2, (height - new_h) // 2, new_w, new_h


def letterbox_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit an RGB uint8 image into (height, width) with its aspect kept, centred, padded grey."""
    _, x, y, new_w, new_h = letterbox_geometry(rgb.shape[:2], size)
    out = np.full((size[0], size[1], 3), LETTERBOX_FILL, np.uint8)
    out[y: y + new_h, x: x + new_w] = resize_rgb(rgb, (new_h, new_w))
    return out


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV image (BGR as cv2.imread gives) to a letterboxed model input: RGB uint8 [H, W, 3]."""
    return letterbox_rgb(to_rgb_uint8(image), size)


def unletterbox_boxes(boxes: np.ndarray, src_hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Relative x1, y1, x2, y2 boxes of a letterboxed input [..., 4] to pixels of the photo, clipped."""
    scale, x, y, _, _ = letterbox_geometry(src_hw, size)
    height, width = size
    px = (np.asarray(boxes, np.float32) * np.array([width, height, width, height], np.float32)
          - np.array([x, y, x, y], np.float32)) / scale
    return np.clip(px, 0, np.array([src_hw[1], src_hw[0], src_hw[1], src_hw[0]], np.float32))
