"""Annotated output: every digit's box and class drawn on a copy of the photo, the number in a corner."""

from __future__ import annotations

import cv2
import numpy as np

from digitloc.runtime.detector import Detection
from digitloc.runtime.preprocess import to_rgb_uint8

RED, WHITE, BLACK = (0, 0, 255), (255, 255, 255), (0, 0, 0)


def _label(out: np.ndarray, text: str, x: int, y: int, scale: float, thickness: int, colour: tuple) -> None:
    """Text on a filled box with its baseline at (x, y), kept inside the image."""
    h, w = out.shape[:2]
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = min(max(0, x), max(0, w - tw))
    y = min(max(th + 2, y), max(th + 2, h - base))
    cv2.rectangle(out, (x, y - th - 2), (x + tw, y + base), colour, -1)
    cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, thickness, cv2.LINE_AA)


def annotate(image: np.ndarray, detection: Detection) -> np.ndarray:
    """A BGR uint8 copy of ``image`` (any depth/channels) at its own size with every digit read
    (box, class and score) and the number in the top-left corner."""
    out = cv2.cvtColor(to_rgb_uint8(image), cv2.COLOR_RGB2BGR)
    h, w = out.shape[:2]
    thickness = max(1, round(min(h, w) / 150))
    scale = max(0.35, min(h, w) / 300)
    for d in detection.digits:
        x1, y1, x2, y2 = (int(round(v)) for v in d.bbox)
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), RED, thickness)
        _label(out, f"{d.digit} {d.confidence:.2f}", x1, y1 - 4 if y1 > 16 else y2 + 16, scale, thickness, RED)
    _label(out, detection.number or "-", 2, 4, scale * 1.3, thickness, BLACK)
    return out
