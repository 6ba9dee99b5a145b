"""The parity gate: the written ONNX model against the Keras original on the same images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, INPUT_NAME, box_iou, order_box


def onnx_predict(path: Path, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and probabilities from ONNX Runtime (CPU) for preprocessed uint8 images."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, probs = [], []
    for start in range(0, len(images), batch_size):
        b, p = session.run([BBOX_OUTPUT, DIGIT_OUTPUT], {INPUT_NAME: images[start:start + batch_size]})
        boxes.append(b)
        probs.append(p)
    return np.concatenate(boxes).astype(np.float32), np.concatenate(probs).astype(np.float32)


def compare(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Per output max and mean abs diff, class agreement, and IoU between the two models' boxes."""
    (ref_boxes, ref_probs), (boxes, probs) = reference, candidate
    box_diff = np.abs(ref_boxes.astype(np.float64) - boxes)
    prob_diff = np.abs(ref_probs.astype(np.float64) - probs)
    ious = box_iou(order_box(ref_boxes), order_box(boxes))
    return {
        "samples": int(len(ref_boxes)),
        "bbox_max_abs_diff": float(box_diff.max()),
        "bbox_mean_abs_diff": float(box_diff.mean()),
        "digit_max_abs_diff": float(prob_diff.max()),
        "digit_mean_abs_diff": float(prob_diff.mean()),
        "max_abs_diff": float(max(box_diff.max(), prob_diff.max())),
        "class_agreement": float((ref_probs.argmax(1) == probs.argmax(1)).mean()),
        "box_iou_mean": float(ious.mean()),
        "box_iou_min": float(ious.min()),
    }


def gate(report: dict[str, Any], precision: str, max_abs_diff: float, min_agreement: float) -> str | None:
    """Why the export fails the gate, or None when it passes."""
    if precision == "fp32" and report["max_abs_diff"] > max_abs_diff:
        return f"fp32 max abs diff {report['max_abs_diff']:.3g} exceeds {max_abs_diff:g}"
    if report["class_agreement"] < min_agreement:
        return f"class agreement {report['class_agreement']:.4f} is below {min_agreement:g}"
    return None
