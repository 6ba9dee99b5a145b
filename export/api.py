"""The export pipeline: load -> convert -> metadata -> precision variant -> parity gate -> write.

Nothing is left at the output path unless the whole pipeline, gate included, succeeded.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.metrics import agreement, class_accuracy
from digitloc.export.convert import commit_variant, digitloc_version
from digitloc.export.errors import ExportError
from digitloc.export.parity import gate, gate_for, onnx_predict
from digitloc.export.quantize import Fp32Config, QuantConfig
from digitloc.runtime import contract
from digitloc.runtime.cpuinfo import cpu_report
from digitloc.runtime.fileio import check_writable
from digitloc.train.record import RunRecord


@dataclass(frozen=True)
class ExportConfig:
    """One export: where to, which precision, how strict the gate is."""

    output: Path
    quant: QuantConfig
    opset: int = 17
    simplify: bool = False
    parity_images: np.ndarray | None = None  # real uint8 photos; None: the run's own val photos
    parity_labels: np.ndarray | None = None  # their digits, for the accuracy check
    parity_random: bool = False  # check on random noise when no photos are given (said loudly)
    parity_size: int = 256
    # Gate thresholds; None takes the precision's default (export.parity.GATES).
    max_abs_diff: float | None = None
    min_agreement: float | None = None
    min_box_iou: float | None = None
    max_accuracy_drop: float | None = None
    force: bool = False


RANDOM_WARNING = ("WARNING: parity checked on RANDOM NOISE, not real photos: agreement and box IoU on noise say "
                  "little about accuracy on photos")


def model_metadata(run: RunRecord, size: tuple[int, int], precision: str, extra: dict[str, Any]) -> dict[str, str]:
    """Contract metadata plus what the model's run folder says about its training."""
    meta: dict[str, str] = {}
    cfg, figures, manifest = run.config(), run.evaluation(), run.manifest()
    if cfg is not None:
        meta[contract.META_BACKBONE] = json.dumps({"name": "vgg19", **cfg.get("model", {})})
        summary: dict[str, Any] = {"data": str(run.data_folder() or Path("")), "box_loss": cfg.get("box_loss"),
                                   "epochs": cfg.get("epochs")}
        if manifest is not None:
            summary["splits"] = {k: v.get("per_kind") for k, v in manifest["splits"].items()}
        meta[contract.META_TRAINING] = json.dumps(summary)
    if figures is not None:
        meta[contract.META_EVALUATION] = json.dumps({
            name: {k: figures[name][k] for k in ("samples", "class_accuracy", "mean_iou", "iou_hit_rate", "both_right")}
            for name in ("val_real", "test_real", "heldout_real") if name in figures})
    if extra.get("excluded_nodes") is not None:
        meta[contract.META_EXCLUDED_NODES] = json.dumps(extra["excluded_nodes"])
    meta[contract.META_VERSION] = digitloc_version()
    meta[contract.META_EXPORTED_AT] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return contract.contract_metadata(size, precision, meta)


def load_keras(path: Path) -> Any:
    from digitloc.train.model import ModelError, load_model

    if path.suffix != ".keras":
        raise ExportError(f"{path}: expected a Keras .keras file")
    try:
        return load_model(path)
    except ModelError as exc:
        raise ExportError(str(exc)) from None


def run_parity_photos(run: RunRecord, size: tuple[int, int], limit: int,
                      seed: int = 1) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Real held-out photos of the model's own run (its config.json's dataset, val split, no
    synthetic images) with their digits, or None when the run folder does not lead to them."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.annotations.dataset.images import load_labelled

    folder = run.data_folder()
    if folder is None or not (folder / "val.npz").is_file():
        return None
    try:
        images, labels = load_labelled(folder, size, "val", limit, seed)
    except DatasetError:
        return None
    return images, labels, f"real images ({folder / 'val.npz'}, the run's own val split)"


def _simplify(path: Path) -> None:
    """Constant folding and redundant-node removal with ONNX Runtime's portable (basic) optimizer."""
    import onnx
    import onnxruntime as ort

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    proto = onnx.load(options.optimized_model_filepath)
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))
    Path(options.optimized_model_filepath).unlink()


def export_model(keras_path: str | os.PathLike[str], cfg: ExportConfig, model: Any | None = None) -> dict[str, Any]:
    """Export ``keras_path`` per ``cfg``; returns the parity report (also written beside the model).
    ``model``: that file already loaded (it is loaded once per export)."""
    import onnx

    from digitloc.export.convert import check_two_head, is_detector, keras_to_onnx, set_metadata
    from digitloc.export.quantize import quantize
    from digitloc.train.model import keras_predict

    keras_path = Path(keras_path)
    output = Path(cfg.output)
    report_path = output.with_suffix(".parity.json")
    try:
        check_writable(output, cfg.force)
        check_writable(report_path, cfg.force)
    except OSError as exc:
        raise ExportError(str(exc)) from None
    if not os.access(output.parent, os.W_OK):
        raise ExportError(f"{output.parent}: not writable")
    model = model if model is not None else load_keras(keras_path)
    run = RunRecord.of_model(keras_path)
    size = check_two_head(model, str(keras_path))
    if is_detector(model):
        from digitloc.export.detector import export_detector, gate_limits, parity_photos

        images, source = ((cfg.parity_images[:cfg.parity_size], "real photos letterboxed")
                          if cfg.parity_images is not None else parity_photos(None, keras_path, size, cfg.parity_size))
        limits = gate_limits(cfg.quant.name, cfg.min_agreement, cfg.min_box_iou)
        return export_detector(keras_path, model, output, cfg.quant, images, source, cfg.opset, cfg.force, limits)
    proto = keras_to_onnx(model, cfg.opset)

    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".digitloc-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        set_metadata(proto, model_metadata(run, size, Fp32Config.name, {}))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(fp32))
        if cfg.simplify:
            _simplify(fp32)
        variant = Path(tmp) / "variant.onnx"
        extra = quantize(fp32, variant, cfg.quant)
        final = onnx.load(str(variant))
        set_metadata(final, model_metadata(run, size, cfg.quant.name, extra))
        onnx.checker.check_model(final)
        onnx.save(final, str(variant))

        images, labels, source = _parity_inputs(keras_path, run, size, cfg)
        reference = keras_predict(model, images)
        candidate = onnx_predict(variant, images)
        report = agreement(reference, candidate)
        limits = gate_for(cfg.quant.name, max_abs_diff=cfg.max_abs_diff, min_agreement=cfg.min_agreement,
                          min_box_iou=cfg.min_box_iou, max_accuracy_drop=cfg.max_accuracy_drop)
        report.update({"precision": cfg.quant.name, "parity_inputs": source,
                       "keras_accuracy": None if labels is None else class_accuracy(labels, reference[1]),
                       "accuracy": None if labels is None else class_accuracy(labels, candidate[1]),
                       "opset": cfg.opset, "size_bytes": variant.stat().st_size, "fp32_size_bytes": fp32.stat().st_size,
                       "keras_model": str(keras_path), **{k: v for k, v in extra.items() if k != "excluded_nodes"},
                       "excluded_nodes": extra.get("excluded_nodes", []), "gate": limits.to_dict(),
                       "cpu": cpu_report()})
        if source.startswith("RANDOM"):
            report["warning"] = RANDOM_WARNING
        failure = gate(report, cfg.quant.name, limits)
        commit_variant(report, failure, variant, output, len(images), source)
    return report


def _parity_inputs(keras_path: Path, run: RunRecord, size: tuple[int, int],
                   cfg: ExportConfig) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The parity photos (given, or the run's own val photos), their digits if known, and what they are;
    random noise only when asked for."""
    if cfg.parity_images is not None and len(cfg.parity_images):
        labels = None if cfg.parity_labels is None else cfg.parity_labels[:cfg.parity_size]
        return cfg.parity_images[:cfg.parity_size], labels, "real images"
    found = run_parity_photos(run, size, cfg.parity_size)
    if found is not None:
        return found
    if not cfg.parity_random:
        raise ExportError(f"{keras_path}: no real photos for the parity gate (none given, and the run folder's "
                          "config.json leads to no val split of this size); give parity photos, or ask for a "
                          "check on random noise explicitly")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (min(cfg.parity_size, 32), *size, 3), dtype=np.uint8)
    return noise, None, "RANDOM NOISE (asked for; not real photos)"
