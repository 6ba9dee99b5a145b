"""digitloc runtime: serve digit predictions from ONNX models (numpy, onnxruntime, OpenCV only)."""

from digitloc.runtime.contract import NUM_CLASSES, Box, clip_box, pixels_to_relative, relative_to_pixels
from digitloc.runtime.preprocess import preprocess, to_rgb_uint8

__all__ = [
    "NUM_CLASSES",
    "Box",
    "clip_box",
    "pixels_to_relative",
    "preprocess",
    "relative_to_pixels",
    "to_rgb_uint8",
]
