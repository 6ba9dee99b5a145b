"""The parity gate: the written ONNX model against the Keras original on the same real photos.

It checks what ships: class agreement, the boxes (mean IoU between the two models' boxes) and,
where the photos carry labels, accuracy against Keras' own accuracy; fp32 must also match Keras'
outputs closely. Thresholds are per precision (:data:`GATES`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.export.quantize import Fp16Config, Fp32Config, Int8DynamicConfig, Int8StaticConfig
from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, INPUT_NAME


def onnx_predict(path: Path, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and probabilities from ONNX Runtime (CPU) for preprocessed uint8 images."""
    from digitloc.runtime.detector import open_session

    session = open_session(path)
    boxes, probs = [], []
    for start in range(0, len(images), batch_size):
        b, p = session.run([BBOX_OUTPUT, DIGIT_OUTPUT], {INPUT_NAME: images[start:start + batch_size]})
        boxes.append(b)
        probs.append(p)
    return np.concatenate(boxes).astype(np.float32), np.concatenate(probs).astype(np.float32)


@dataclass(frozen=True)
class Gate:
    """What a variant must reach against Keras on the parity photos."""

    min_agreement: float = 0.99  # share of photos where both models name the same digit
    min_box_iou: float = 0.97  # mean IoU between the two models' boxes
    max_accuracy_drop: float = 0.005  # accuracy (labelled photos) at most this far below Keras'
    max_abs_diff: float = 1e-4  # largest output difference, checked for fp32 only

    def to_dict(self) -> dict[str, float]:
        return {"min_class_agreement": self.min_agreement, "min_box_iou": self.min_box_iou,
                "max_accuracy_drop": self.max_accuracy_drop, "max_abs_diff": self.max_abs_diff}


GATES = {
    Fp32Config.name: Gate(min_agreement=0.999, min_box_iou=0.999, max_accuracy_drop=0.0),
    Fp16Config.name: Gate(min_agreement=0.99, min_box_iou=0.99),
    Int8DynamicConfig.name: Gate(min_agreement=0.98, min_box_iou=0.95, max_accuracy_drop=0.01),
    Int8StaticConfig.name: Gate(),
}


def gate_for(precision: str, **overrides: float | None) -> Gate:
    """The precision's gate with the given thresholds replaced (None keeps the default)."""
    return replace(GATES.get(precision, Gate()), **{k: v for k, v in overrides.items() if v is not None})


def gate(report: dict[str, Any], precision: str, limits: Gate) -> str | None:
    """Why the export fails the gate (every reason, joined), or None when it passes."""
    reasons = []
    if precision == Fp32Config.name and report["max_abs_diff"] > limits.max_abs_diff:
        reasons.append(f"fp32 max abs diff {report['max_abs_diff']:.3g} exceeds {limits.max_abs_diff:g}")
    if report["class_agreement"] < limits.min_agreement:
        reasons.append(f"class agreement {report['class_agreement']:.4f} is below {limits.min_agreement:g}")
    if report["box_iou_mean"] < limits.min_box_iou:
        reasons.append(f"mean box IoU with Keras {report['box_iou_mean']:.4f} is below {limits.min_box_iou:g}")
    if report.get("accuracy") is not None and report.get("keras_accuracy") is not None:
        drop = report["keras_accuracy"] - report["accuracy"]
        if drop > limits.max_accuracy_drop + 1e-9:
            reasons.append(f"accuracy {report['accuracy']:.4f} is {100 * drop:.2f} pt below Keras' "
                           f"{report['keras_accuracy']:.4f} (at most {100 * limits.max_accuracy_drop:.2f} pt)")
    return "; ".join(reasons) or None
