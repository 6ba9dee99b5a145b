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
    rows = variant_rows(onnx_paths, predictions, reference, base, truth, agreement)
    return {"samples": len(data), "keras": {"model": keras_path.name, **base}, "variants": rows}


def variant_rows(onnx_paths: list[Path], predictions: list[Any], reference: Any, base: dict[str, float], truth: Any,
                 agree: Any) -> list[dict]:
    """One row per variant: its truth figures, their change from Keras' (``base``), and ``agree`` (two
    models' outputs -> figures) against Keras and against the fp32 variant among them (if any)."""
    precisions = [precision_of(path) for path in onnx_paths]
    fp32 = predictions[precisions.index(FP32)] if FP32 in precisions else None
    rows = []
    for path, precision, pred in zip(onnx_paths, precisions, predictions, strict=True):
        figures = truth(pred)
        rows.append({"model": path.name, "precision": precision, "size_mb": path.stat().st_size / 1e6, **figures,
                     **{f"delta_{k}": figures[k] - base[k] for k in figures},
                     "vs_keras": agree(reference, pred),
                     "vs_fp32": None if fp32 is None or precision == FP32 else agree(fp32, pred)})
    return rows


def detector_drift_table(keras_path: Path, onnx_paths: list[Path], images: np.ndarray, boxes: np.ndarray,
                         labels: np.ndarray, predictions: list[dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """For detectors (contract 2), on letterboxed real photos: each variant's number accuracy and
    digit recall against the truth, and its agreement with Keras and with the fp32 variant: the
    same number read (at the model's threshold) and the IoU of the digits matched one to one."""
    from digitloc.annotations.detmetrics import detection_figures, photo_results
    from digitloc.export.detector import compare_detections, onnx_detections, run_threshold
    from digitloc.train.model import load_model, predict_detections

    min_score = run_threshold(keras_path)
    reference = predict_detections(load_model(keras_path), images)
    keys = ("number_accuracy", "digit_recall", "digit_precision", "matched_iou")

    def truth(det: dict[str, np.ndarray]) -> dict[str, float]:
        figures = detection_figures(photo_results(det, boxes, labels, min_score))
        return {k: figures[k] for k in keys}

    base = truth(reference)
    if predictions is None:
        predictions = [onnx_detections(path, images) for path in onnx_paths]
    rows = variant_rows(onnx_paths, predictions, reference, base, truth,
                        lambda a, b: compare_detections(a, b, min_score))
    return {"samples": len(images), "min_score": min_score, "keras": {"model": keras_path.name, **base},
            "variants": rows}


def detector_drift_markdown(result: dict[str, Any]) -> str:
    """One row per variant: truth figures, then agreement with Keras and fp32."""
    head = ("| variant | precision | MB | numbers exact | digit recall | same number as Keras / matched IoU "
            "| same number as fp32 / matched IoU |\n|---|---|---|---|---|---|---|\n")
    k = result["keras"]
    body = f"| {k['model']} (Keras) | - | - | {k['number_accuracy']:.4f} | {k['digit_recall']:.4f} | - | - |\n"
    for r in result["variants"]:
        vs_fp32 = ("-" if r["vs_fp32"] is None else
                   f"{r['vs_fp32']['number_agreement']:.4f} / {r['vs_fp32']['box_iou_mean']:.4f}")
        body += (f"| {r['model']} | {r['precision']} | {r['size_mb']:.2f} | {r['number_accuracy']:.4f} | "
                 f"{r['digit_recall']:.4f} | {r['vs_keras']['number_agreement']:.4f} / "
                 f"{r['vs_keras']['box_iou_mean']:.4f} | {vs_fp32} |\n")
    return (f"{result['samples']} real photos letterboxed, threshold {result['min_score']:g} (the run's own)\n\n"
            + head + body)
