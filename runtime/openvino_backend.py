"""OpenVINO as a provider of the runtime (``Detector(provider="openvino")``, extra ``openvino``).

OpenVINO reads the same ONNX file. :class:`OpenVINOSession` offers the few methods of an
onnxruntime ``InferenceSession`` that the Detector uses, so nothing else changes. Each batch
size gets its own static-shape compiled model (compiled on first use), which OpenVINO runs
faster than one with a dynamic batch; the ``MAX_COMPILED`` sizes used last are kept (a server's
batches of every size from 1 to its limit must not each keep a compiled model for ever). One
synchronous request at a time, under a lock, so that the Detector stays safe to call from several
threads (calls from several threads take turns, where onnxruntime runs them side by side).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROVIDER_NAME = "OpenVINO-CPU"
MAX_COMPILED = 8  # compiled batch sizes kept, the least recently used dropped first
_TYPES = {"u8": "tensor(uint8)", "f32": "tensor(float)", "i8": "tensor(int8)", "f16": "tensor(float16)"}


@dataclass(frozen=True)
class _Arg:
    name: str
    type: str
    shape: list[Any]


@dataclass(frozen=True)
class _Meta:
    custom_metadata_map: dict[str, str]


class OpenVINOSession:
    """An onnxruntime-like session on OpenVINO's CPU plugin (latency hint: one stream, all cores)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import openvino as ov

        self._core = ov.Core()
        self._model = self._core.read_model(str(path))
        # f32: on CPUs with bf16 (AVX-512 BF16, AMX) OpenVINO would otherwise run float layers in bf16.
        self._config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._compiled: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._input = self._model.inputs[0].get_any_name()

    def _arg(self, port: Any) -> _Arg:
        shape = [d.get_length() if d.is_static else "batch" for d in port.get_partial_shape()]
        return _Arg(port.get_any_name(), _TYPES.get(port.get_element_type().get_type_name(), "unknown"), shape)

    def get_inputs(self) -> list[_Arg]:
        return [self._arg(p) for p in self._model.inputs]

    def get_outputs(self) -> list[_Arg]:
        return [self._arg(p) for p in self._model.outputs]

    def get_providers(self) -> list[str]:
        return [PROVIDER_NAME]

    def get_modelmeta(self) -> _Meta:
        info = self._model.get_rt_info()
        meta = {}
        if "framework" in info:
            framework = info["framework"]
            if hasattr(framework, "astype"):
                framework = framework.astype(dict)
            meta = {k: v.astype(str) if hasattr(v, "astype") else str(v) for k, v in framework.items()}
        return _Meta(meta)

    def _request(self, batch: int) -> tuple[Any, dict[str, Any]]:
        if batch in self._compiled:
            self._compiled.move_to_end(batch)
        else:
            model = self._model.clone()
            shape = list(model.input(self._input).get_partial_shape())
            model.reshape({self._input: [batch, *[d.get_length() for d in shape[1:]]]})
            compiled = self._core.compile_model(model, "CPU", self._config)
            self._compiled[batch] = (compiled.create_infer_request(), {o.get_any_name(): o for o in compiled.outputs})
            while len(self._compiled) > MAX_COMPILED:
                self._compiled.popitem(last=False)
        return self._compiled[batch]

    @property
    def compiled_batches(self) -> list[int]:
        """The batch sizes with a compiled model kept, the least recently used first."""
        return list(self._compiled)

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        images = feed[self._input]
        with self._lock:
            request, outputs = self._request(len(images))
            result = request.infer({self._input: images})
            return [np.array(result[outputs[n]]) for n in names]
