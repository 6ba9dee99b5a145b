"""Exporting a detector (contract version 2): its metadata, its int8 calibration and its parity gate.

The gate compares what a user is shown: on the same letterboxed photos, the number the ONNX
variant reads against the number Keras reads (at the model's own threshold), and the IoU of
their digits' boxes matched one to one. The decoding (peak picking, top-K) stays in float in
every variant, so int8 only moves the scores the peaks are picked from.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.detmetrics import greedy_match, read_photo
from digitloc.export.convert import commit_variant, digitloc_version
from digitloc.export.errors import ExportError
from digitloc.export.quantize import Fp16Config, Fp32Config, Int8DynamicConfig, Int8StaticConfig
from digitloc.runtime import contract
from digitloc.runtime.contract import BOXES_OUTPUT, CLASSES_OUTPUT, INPUT_NAME, SCORES_OUTPUT, box_iou
from digitloc.runtime.number import DEFAULT_MIN_SCORE
from digitloc.train.int8grid import DETECTOR_FLOAT

# The nodes kept in float (train.int8grid.DETECTOR_FLOAT, beside the snap onto the int8 grid): the neck's
# 1x1 laterals and adds, the heads (stride 4) and the decoding. They and the calibration were chosen by the
# same number read against fp32 on the validation photos (238, this run; model card): minmax with only
# the decoding float 0.933, + neck and heads 0.937, + blocks 4-5 0.950; percentile with the decoding float
# 0.958, + neck and heads 0.975 (head_conv: the shared head of --shared-head). The neck's 3x3 neck_conv is
# int8: tf2onnx folds its BatchNorm into it and renames it Conv__N, so no name part reaches it. Kept float
# on stage 7 (session 14, the method of scripts/int8_detector_schemes.py run from a draft, 833 photos:
# validation + fit/) it read the same number as fp32 no more often (onnxruntime 0.976 either way) and cost
# 4 % / 9 % of the int8 speed at batch 32 through onnxruntime / OpenVINO (scripts/interleaved_rate.py, under
# load), so it stays int8; a test says so.
DETECTOR_CALIBRATION = "percentile"


@dataclass(frozen=True)
class DetectorGate:
    """What a detector variant must reach against Keras on the parity photos."""

    min_number_agreement: float
    min_box_iou: float

    def to_dict(self) -> dict[str, float]:
        return {"min_number_agreement": self.min_number_agreement, "min_box_iou": self.min_box_iou}


DETECTOR_GATES = {
    Fp32Config.name: DetectorGate(0.999, 0.999),
    Fp16Config.name: DetectorGate(0.98, 0.98),
    Int8DynamicConfig.name: DetectorGate(0.95, 0.95),
    Int8StaticConfig.name: DetectorGate(0.97, 0.95),
}


def gate_limits(precision: str, min_agreement: float | None = None, min_box_iou: float | None = None) -> DetectorGate:
    """The precision's own gate, with the bounds a caller gives in place of its defaults."""
    default = DETECTOR_GATES.get(precision, DETECTOR_GATES[Int8StaticConfig.name])
    return DetectorGate(default.min_number_agreement if min_agreement is None else min_agreement,
                        default.min_box_iou if min_box_iou is None else min_box_iou)


def run_threshold(keras_path: Path) -> float:
    """The score threshold the run chose on its validation photos (evaluation.json), else the default."""
    path = keras_path.parent / "evaluation.json"
    try:
        return float(json.loads(path.read_text())["min_score"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MIN_SCORE


def detector_metadata(keras_path: Path, size: tuple[int, int], precision: str, top_k: int,
                      extra: dict[str, Any]) -> dict[str, str]:
    """Contract version 2 metadata: the run's config, training data, validation figures and threshold."""
    meta: dict[str, str] = {contract.META_MIN_SCORE: f"{run_threshold(keras_path):g}", contract.META_TOP_K: str(top_k)}
    folder = keras_path.parent
    for name, key in (("config.json", contract.META_BACKBONE), ("evaluation.json", contract.META_EVALUATION)):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if key == contract.META_BACKBONE:
            meta[key] = json.dumps({"name": "vgg19-detector", **data.get("model", {})})
            meta[contract.META_TRAINING] = json.dumps({k: data.get(k) for k in ("data", "epochs", "steps_per_epoch",
                                                                               "init_backbone", "int8_grid", "soup")})
        else:
            meta[key] = json.dumps({"val": {k: data.get("figures", {}).get(k) for k in
                                            ("photos", "number_accuracy", "digit_recall", "digit_precision")}})
    if extra.get("excluded_nodes") is not None:
        meta[contract.META_EXCLUDED_NODES] = json.dumps(extra["excluded_nodes"])
    meta[contract.META_VERSION] = digitloc_version()
    meta[contract.META_EXPORTED_AT] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return contract.contract_metadata(size, precision, meta, detector=True)


def float_nodes(proto: Any) -> list[str]:
    """Nodes of the heads' last layers and of the decoding, kept in float by int8 quantization."""
    return [n.name for n in proto.graph.node if any(part in n.name for part in DETECTOR_FLOAT)]


def onnx_detections(path: Path, images: np.ndarray, batch_size: int = 64, provider: str = "cpu") -> dict[str, np.ndarray]:
    """boxes, scores, classes from ONNX Runtime (CPU by default; any ``open_session`` provider, e.g.
    openvino) for letterboxed uint8 images."""
    from digitloc.runtime.detector import open_session

    session = open_session(path, provider)
    names = [BOXES_OUTPUT, SCORES_OUTPUT, CLASSES_OUTPUT]
    parts: dict[str, list] = {k: [] for k in names}
    for start in range(0, len(images), batch_size):
        for k, v in zip(names, session.run(names, {INPUT_NAME: images[start: start + batch_size]}), strict=True):
            parts[k].append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def compare_detections(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                       min_score: float) -> dict[str, Any]:
    """Same number read (share of photos), IoU of the digits matched one to one (mean over the
    matched digits; a digit read by one side only counts 0), and the largest score difference."""
    same = 0
    ious: list[float] = []
    for n in range(len(reference[SCORES_OUTPUT])):
        ref_boxes, ref_classes = read_photo(reference, n, min_score)
        boxes, classes = read_photo(candidate, n, min_score)
        same += int(ref_classes.tolist() == classes.tolist())
        match = greedy_match(boxes, ref_boxes, 0.0)
        ious += [float(box_iou(boxes[i], ref_boxes[j])) if j >= 0 else 0.0 for i, j in enumerate(match)]
        ious += [0.0] * max(0, len(ref_boxes) - int((match >= 0).sum()))
    photos = len(reference[SCORES_OUTPUT])
    return {"samples": photos, "number_agreement": same / max(photos, 1),
            "box_iou_mean": float(np.mean(ious)) if ious else 1.0,
            "score_max_abs_diff": float(np.abs(reference[SCORES_OUTPUT] - candidate[SCORES_OUTPUT]).max()),
            "min_score": min_score}


def detector_gate(report: dict[str, Any], limits: DetectorGate) -> str | None:
    """Why a detector export fails its gate, or None."""
    reasons = []
    if report["number_agreement"] < limits.min_number_agreement:
        reasons.append(f"same number read on {report['number_agreement']:.4f} of photos, below "
                       f"{limits.min_number_agreement:g}")
    if report["box_iou_mean"] < limits.min_box_iou:
        reasons.append(f"matched box IoU with Keras {report['box_iou_mean']:.4f} is below {limits.min_box_iou:g}")
    return "; ".join(reasons) or None


def parity_photos(source: str | None, keras_path: Path, size: tuple[int, int], limit: int,
                  split: str = "val") -> tuple[np.ndarray, str]:
    """Letterboxed real photos of a detection dataset (``source``, else the run's own data), its
    ``split`` (val: whole photos; train: composed samples, for calibration)."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.annotations.dataset.detection import load_detection

    folder = Path(source) if source else None
    if folder is None:
        try:
            folder = Path(json.loads((keras_path.parent / "config.json").read_text())["data"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ExportError(f"{keras_path}: no detection dataset given and the run folder names none") from None
    try:
        data = load_detection(folder / f"{split}.npz")
    except DatasetError as exc:
        raise ExportError(str(exc)) from None
    images = data["images"]
    if images.shape[1:3] != tuple(size):
        raise ExportError(f"{folder}: images are {images.shape[2]}x{images.shape[1]}, the model takes {size[1]}x{size[0]}")
    pick = np.sort(np.random.default_rng(1).permutation(len(images))[:limit])
    return images[pick], f"real photos letterboxed ({folder / f'{split}.npz'})"


def export_detector(keras_path: Path, model: Any, output: Path, quant: Any, parity: np.ndarray, parity_source: str,
                    opset: int = 17, force: bool = False, limits: DetectorGate | None = None) -> dict[str, Any]:
    """Convert, quantize and gate a detector; nothing is left at ``output`` unless the gate passed
    (``limits``: the precision's own gate by default). Returns the parity report (also written
    beside the model)."""
    import tempfile

    import onnx

    from digitloc.export.convert import check_two_head, keras_to_onnx, set_metadata
    from digitloc.export.quantize import quantize
    from digitloc.runtime.cpuinfo import cpu_report
    from digitloc.runtime.fileio import check_writable
    from digitloc.train.model import predict_detections

    report_path = output.with_suffix(".parity.json")
    try:
        check_writable(output, force)
        check_writable(report_path, force)
    except OSError as exc:
        raise ExportError(str(exc)) from None
    size = check_two_head(model, str(keras_path))
    top_k = int(model.output[SCORES_OUTPUT].shape[-1])
    proto = keras_to_onnx(model, opset)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".digitloc-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        set_metadata(proto, detector_metadata(keras_path, size, Fp32Config.name, top_k, {}))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(fp32))
        if isinstance(quant, Int8StaticConfig):
            from dataclasses import replace

            quant = replace(quant, keep_float=())
        variant = Path(tmp) / "variant.onnx"
        extra = _quantize_detector(fp32, variant, quant, quantize)
        final = onnx.load(str(variant))
        set_metadata(final, detector_metadata(keras_path, size, quant.name, top_k, extra))
        onnx.checker.check_model(final)
        onnx.save(final, str(variant))
        min_score = run_threshold(keras_path)
        report = compare_detections(predict_detections(model, parity), onnx_detections(variant, parity), min_score)
        limits = limits or gate_limits(quant.name)
        report.update({"precision": quant.name, "parity_inputs": parity_source, "opset": opset,
                       "size_bytes": variant.stat().st_size, "keras_model": str(keras_path), "gate": limits.to_dict(),
                       "excluded_nodes": extra.get("excluded_nodes", []), "cpu": cpu_report(),
                       **{k: v for k, v in extra.items() if k != "excluded_nodes"}})
        failure = detector_gate(report, limits)
        commit_variant(report, failure, variant, output, len(parity), parity_source)
    return report


def _quantize_detector(fp32: Path, variant: Path, quant: Any, quantize: Any) -> dict[str, Any]:
    """The precision variant, with the decoding kept in float for int8-static."""
    if not isinstance(quant, Int8StaticConfig):
        return quantize(fp32, variant, quant)
    import onnx

    excluded = float_nodes(onnx.load(str(fp32)))
    extra = quantize(fp32, variant, quant, extra_excluded=excluded)
    return extra
