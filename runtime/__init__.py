"""digitloc runtime: serve digit predictions from ONNX models (numpy, onnxruntime, OpenCV only).

    from digitloc.runtime import Detector
    det = Detector()                 # the default model: CUDA if usable, else the CPU (OpenVINO where faster)
    d = det.predict("photo.png")     # Detection(digit, confidence, bbox in pixels, probs)
"""

from digitloc.runtime.contract import NUM_CLASSES, box_iou, clip_box, pixels_to_relative, relative_to_pixels
from digitloc.runtime.detector import Detection, Detector, ProviderError, available_providers, default_model_path
from digitloc.runtime.preprocess import preprocess, to_rgb_uint8

__all__ = [
    "NUM_CLASSES",
    "Detection",
    "Detector",
    "ProviderError",
    "available_providers",
    "box_iou",
    "clip_box",
    "default_model_path",
    "pixels_to_relative",
    "preprocess",
    "relative_to_pixels",
    "to_rgb_uint8",
]
