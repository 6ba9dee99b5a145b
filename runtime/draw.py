"""Annotated output: the box, digit and confidence drawn on a copy of the photo."""

from __future__ import annotations

import cv2
import numpy as np

from digitloc.runtime.detector import Detection
from digitloc.runtime.preprocess import to_rgb_uint8


def annotate(image: np.ndarray, detection: Detection) -> np.ndarray:
    """A BGR uint8 copy of ``image`` (any depth/channels) at its own size with the detection drawn."""
    out = cv2.cvtColor(to_rgb_uint8(image), cv2.COLOR_RGB2BGR)
    h, w = out.shape[:2]
    thickness = max(1, round(min(h, w) / 150))
    x1, y1, x2, y2 = (int(round(v)) for v in detection.bbox)
    cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), (0, 0, 255), thickness)
    label = f"{detection.digit} {detection.confidence:.2f}"
    scale = max(0.35, min(h, w) / 300)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    ty = y1 - 4 if y1 - th - 4 >= 0 else min(h - 1, y2 + th + 4)
    tx = min(max(0, x1), max(0, w - tw))
    cv2.rectangle(out, (tx, ty - th - 2), (tx + tw, ty + base), (0, 0, 255), -1)
    cv2.putText(out, label, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out
