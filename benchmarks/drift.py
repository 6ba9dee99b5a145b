"""Accuracy drift of exported variants: against the ground truth and against the Keras original."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitloc.train.data import DataSet


def drift_table(keras_path: Path, onnx_paths: list[Path], data: DataSet) -> dict[str, Any]:
    """Ground-truth figures of Keras and each variant, each variant's agreement with Keras, and deltas."""
    from digitloc.export.parity import compare, onnx_predict
    from digitloc.train.evaluate import evaluate_predictions, keras_predict
    from digitloc.train.model import load_model

    reference = keras_predict(load_model(keras_path), data.images)
    keys = ("class_accuracy", "mean_iou", "iou_hit_rate", "both_right")

    def truth(pred: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        figures = evaluate_predictions(data.boxes, data.labels, pred[0], pred[1])
        return {k: figures[k] for k in keys}

    base = truth(reference)
    rows = []
    for path in onnx_paths:
        pred = onnx_predict(path, data.images)
        figures = truth(pred)
        rows.append({"model": path.name, "size_mb": path.stat().st_size / 1e6, **figures,
                     **{f"delta_{k}": figures[k] - base[k] for k in keys},
                     "vs_keras": compare(reference, pred)})
    return {"samples": len(data), "keras": {"model": keras_path.name, **base}, "variants": rows}
