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
