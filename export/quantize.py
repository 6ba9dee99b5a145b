"""Precision variants: one config object per mode, one entry point that dispatches on it.

- fp32: the converted graph as it is.
- fp16: weights and activations in float16, inputs/outputs kept as the contract says.
- int8-dynamic: weights int8, activations quantized at run time (slow for these convs).
- int8-static: QDQ, per-channel int8 weights with reduce_range (7-bit), uint8 activations
  (U8S8), min-max calibration on real images. Chosen by measurement across CPUs
  (scripts/int8_schemes.py, benchmarks/results/int8-schemes/): on x86 without VNNI,
  onnxruntime sums u8 x s8 pairs in int16 and full-range weights saturate there, so the same
  file gave other answers on AVX2 than on VNNI; 7-bit weights cannot saturate, and the file
  gives the same integers on AVX2, VNNI and ARM. The two heads' last layers stay in float so
  that box coordinates and class probabilities are not squeezed through one shared scale; the
  excluded nodes are returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.export.errors import ExportError
from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, INPUT_NAME


@dataclass(frozen=True)
class Fp32Config:
    name: str = "fp32"


@dataclass(frozen=True)
class Fp16Config:
    name: str = "fp16"
    keep_io_types: bool = True


@dataclass(frozen=True)
class Int8DynamicConfig:
    name: str = "int8-dynamic"
    per_channel: bool = False


@dataclass(frozen=True)
class Int8StaticConfig:
    """Static QDQ quantization calibrated on ``calibration`` (uint8 [N, H, W, 3] RGB images)."""

    name: str = "int8-static"
    calibration: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 1, 1, 3), np.uint8))
    method: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True
    activations: str = "uint8"  # uint8 (U8S8, asymmetric) | int8 (S8S8)
    weights: str = "int8"  # int8 | uint8 (U8U8 with uint8 activations)
    reduce_range: bool = True  # 7-bit weights: no int16 saturation on AVX2 without VNNI
    batch_size: int = 16
    keep_float: tuple[str, ...] = (BBOX_OUTPUT, DIGIT_OUTPUT)  # layer-name prefixes of nodes kept in float
    first_conv_float: bool = False  # the 3-channel first convolution on the raw pixels stays float


QuantConfig = Fp32Config | Fp16Config | Int8DynamicConfig | Int8StaticConfig
CONFIGS: dict[str, type[QuantConfig]] = {c.name: c for c in (Fp32Config, Fp16Config, Int8DynamicConfig, Int8StaticConfig)}
PRECISIONS = tuple(CONFIGS)  # the precision names, as the CLI, the gates and the metadata spell them


class ImageCalibrationReader:
    """Feeds calibration batches to onnxruntime's static quantizer (its CalibrationDataReader API)."""

    def __init__(self, images: np.ndarray, batch_size: int = 16) -> None:
        if images.ndim != 4 or images.dtype != np.uint8 or len(images) == 0:
            raise ExportError("calibration needs real images as uint8 [N, H, W, 3]; none were given")
        self.images, self.batch_size = images, batch_size
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.images), self.batch_size):
            yield {INPUT_NAME: self.images[start:start + self.batch_size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)


def _float_nodes(proto: Any, prefixes: tuple[str, ...], first_conv: bool = False) -> list[str]:
    """Nodes of the heads' last layers (their names carry the Keras layer name), and the first
    convolution when ``first_conv``."""
    out = []
    if first_conv:
        out += [n.name for n in proto.graph.node if n.op_type == "Conv"][:1]
    for node in proto.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Add", "Sigmoid", "Softmax"):
            continue
        layer = node.name.split("/")[1] if node.name.count("/") >= 1 else node.name
        if any(layer == p or layer.startswith(p + "_") or node.name.startswith(p) for p in prefixes):
            out.append(node.name)
    return out


def quantize(fp32_path: Path, out_path: Path, config: QuantConfig,
             extra_excluded: list[str] | None = None) -> dict[str, Any]:
    """Write the ``config`` variant of the fp32 model at ``fp32_path`` to ``out_path``.

    ``extra_excluded``: further nodes int8-static keeps in float (a detector's decoding).
    Returns what the variant needs recorded in its metadata (e.g. excluded nodes).
    """
    import onnx

    if isinstance(config, Fp32Config):
        if fp32_path != out_path:
            out_path.write_bytes(fp32_path.read_bytes())
        return {}
    if isinstance(config, Fp16Config):
        from onnxconverter_common import float16

        proto = onnx.load(str(fp32_path))
        # The uint8 -> float Cast at the input must keep producing float32 for the graph it feeds.
        input_casts = [n.name for n in proto.graph.node if n.op_type == "Cast" and INPUT_NAME in n.input]
        proto = float16.convert_float_to_float16(proto, keep_io_types=config.keep_io_types,
                                                 node_block_list=input_casts)
        onnx.save(proto, str(out_path))
        return {}
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if isinstance(config, Int8DynamicConfig):
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=config.per_channel)
        return {}
    if isinstance(config, Int8StaticConfig):
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        if config.method not in methods:
            raise ExportError(f"unknown calibration method {config.method!r}; choose {', '.join(methods)}")
        activations = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
        if config.activations not in activations:
            raise ExportError(f"unknown activation type {config.activations!r}; choose {', '.join(activations)}")
        weights = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        if config.weights not in weights:
            raise ExportError(f"unknown weight type {config.weights!r}; choose {', '.join(weights)}")
        excluded = _float_nodes(onnx.load(str(fp32_path)), config.keep_float, config.first_conv_float)
        excluded += [n for n in extra_excluded or [] if n not in excluded]
        quantize_static(
            str(fp32_path), str(out_path), ImageCalibrationReader(config.calibration, config.batch_size),
            quant_format=QuantFormat.QDQ, per_channel=config.per_channel, reduce_range=config.reduce_range,
            activation_type=activations[config.activations], weight_type=weights[config.weights],
            calibrate_method=methods[config.method], nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": config.weights == "int8"},
        )
        return {"excluded_nodes": excluded, "calibration_images": int(len(config.calibration)),
                "calibration_method": config.method, "activations": config.activations, "weights": config.weights,
                "reduce_range": config.reduce_range, "per_channel": config.per_channel}
    raise ExportError(f"unknown precision config {config!r}")
