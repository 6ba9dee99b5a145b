"""Keras two-head model -> ONNX with tf2onnx, named and shaped by the runtime contract."""

from __future__ import annotations

from typing import Any

from digitloc.export.errors import ExportError
from digitloc.runtime import contract
from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, INPUT_NAME, NUM_CLASSES

ONE_DIGIT_OUTPUTS = {BBOX_OUTPUT, DIGIT_OUTPUT}
DETECTOR_OUTPUTS = {contract.BOXES_OUTPUT, contract.SCORES_OUTPUT, contract.CLASSES_OUTPUT, *ONE_DIGIT_OUTPUTS}

BATCH_DIM = "batch"


def check_two_head(model: Any, source: str) -> tuple[int, int]:
    """Refuse a Keras model that is not a digitloc model (a one-digit two-head model, contract 1, or a
    detector's inference form, contract 2); returns its input (H, W)."""
    inputs = model.inputs
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 3:
        raise ExportError(f"{source}: not a digitloc model (needs one [N, H, W, 3] image input)")
    if str(inputs[0].dtype) != "uint8":
        raise ExportError(f"{source}: not a digitloc model (input is {inputs[0].dtype}, needs uint8)")
    outputs = model.output if isinstance(model.output, dict) else {}
    if set(outputs) not in (ONE_DIGIT_OUTPUTS, DETECTOR_OUTPUTS):
        extra = ", ".join(sorted(DETECTOR_OUTPUTS - ONE_DIGIT_OUTPUTS))
        raise ExportError(f"{source}: not a digitloc model (outputs must be named {BBOX_OUTPUT!r} and "
                          f"{DIGIT_OUTPUT!r}, and for a detector also {extra})")
    if outputs[BBOX_OUTPUT].shape[-1] != 4 or outputs[DIGIT_OUTPUT].shape[-1] != NUM_CLASSES:
        raise ExportError(f"{source}: not a digitloc model (bbox needs 4 values, digit {NUM_CLASSES})")
    return int(inputs[0].shape[1]), int(inputs[0].shape[2])


def keras_to_onnx(model: Any, opset: int = 17) -> Any:
    """Convert with tf2onnx (explicit uint8 input signature); batch dimension named ``batch``."""
    import tensorflow as tf
    import tf2onnx

    height, width = check_two_head(model, model.name)
    spec = (tf.TensorSpec((None, height, width, 3), tf.uint8, name=INPUT_NAME),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:  # tf2onnx raises many types for unsupported graphs or opsets
        raise ExportError(f"tf2onnx could not convert {model.name} at opset {opset}: {exc}") from None
    names = {o.name for o in proto.graph.output}
    if names != set(model.output):
        raise ExportError(f"converted graph has outputs {sorted(names)}, expected {', '.join(sorted(model.output))}")
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM
    return proto


def set_metadata(proto: Any, metadata: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``metadata`` (all values strings)."""
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in metadata.items()})


def is_detector(model: Any) -> bool:
    """Whether a checked digitloc Keras model is a detector (contract version 2)."""
    return isinstance(model.output, dict) and set(model.output) == DETECTOR_OUTPUTS


def digitloc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digitloc")
    except PackageNotFoundError:
        return "unknown"


def commit_variant(report: dict[str, Any], failure: str | None, variant: Any, output: Any, count: int, source: str) -> None:
    """The end of every export: the gate's verdict in the report; on failure nothing is written (one
    error naming why), else the variant moved onto ``output`` and the report written beside it."""
    import json
    import os

    from digitloc.runtime.fileio import atomic_write_text

    report["passed"] = failure is None
    if failure:
        raise ExportError(f"parity gate failed for {output.name} on {count} {source}: {failure}; nothing written")
    os.replace(variant, output)
    atomic_write_text(output.with_suffix(".parity.json"), json.dumps(report, indent=1))
