"""Accuracy drift of exported variants: against the ground truth and against the Keras original."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.dataset.data import DataSet
from digitloc.annotations.metrics import agreement, evaluate_predictions
from digitloc.export.quantize import Fp32Config

FP32 = Fp32Config.name


def precision_of(path: Path) -> str:
    """The precision an exported model's metadata names."""
    from digitloc.runtime.contract import parse_metadata
    from digitloc.runtime.detector import open_session

    session = open_session(path)
    return parse_metadata(session.get_modelmeta().custom_metadata_map, str(path)).precision


def drift_table(keras_path: Path, onnx_paths: list[Path], data: DataSet,
                predictions: list[tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """Ground-truth figures of Keras and each variant, each variant's agreement with Keras and with
    the fp32 variant among ``onnx_paths`` (if any), and deltas. ``predictions`` are the variants'
    outputs when computed elsewhere (on an emulated CPU); by default they run here."""
    from digitloc.export.parity import onnx_predict
    from digitloc.train.model import keras_predict, load_model

    reference = keras_predict(load_model(keras_path), data.images)
    keys = ("class_accuracy", "mean_iou", "iou_hit_rate", "both_right")

    def truth(pred: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        figures = evaluate_predictions(data.boxes, data.labels, pred[0], pred[1])
        return {k: figures[k] for k in keys}

    base = truth(reference)
    if predictions is None:
        predictions = [onnx_predict(path, data.images) for path in onnx_paths]
    precisions = [precision_of(path) for path in onnx_paths]
    fp32 = predictions[precisions.index(FP32)] if FP32 in precisions else None
    rows = []
    for path, precision, pred in zip(onnx_paths, precisions, predictions, strict=True):
        figures = truth(pred)
        rows.append({"model": path.name, "precision": precision, "size_mb": path.stat().st_size / 1e6, **figures,
                     **{f"delta_{k}": figures[k] - base[k] for k in keys},
                     "vs_keras": agreement(reference, pred),
                     "vs_fp32": None if fp32 is None or precision == FP32 else agreement(fp32, pred)})
    return {"samples": len(data), "keras": {"model": keras_path.name, **base}, "variants": rows}
