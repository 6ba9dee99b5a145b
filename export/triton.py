"""A model repository for NVIDIA Triton Inference Server's onnxruntime backend."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from digitloc.runtime.fileio import OutputExistsError, atomic_path, atomic_write_text

ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16"}


def _tensor(value: Any) -> tuple[str, str, list[int]]:
    t = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim][1:]  # batch is implicit
    return value.name, ONNX_TO_TRITON[t.elem_type], dims


def config_pbtxt(proto: Any, name: str, max_batch_size: int = 64, preferred: tuple[int, ...] = (8, 32),
                 queue_delay_us: int = 500, instance_kind: str = "KIND_AUTO") -> str:
    """config.pbtxt text for an ONNX model: inputs/outputs, batching, one instance group."""
    def block(values: list[Any]) -> str:
        items = []
        for v in values:
            n, dtype, dims = _tensor(v)
            items.append(f'  {{\n    name: "{n}"\n    data_type: {dtype}\n    dims: [ {", ".join(map(str, dims))} ]\n  }}')
        return ",\n".join(items)

    return (
        f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{block(list(proto.graph.input))}\n]\noutput [\n{block(list(proto.graph.output))}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
        f"instance_group [\n  {{\n    count: 1\n    kind: {instance_kind}\n  }}\n]\n"
    )


def check_repository(repo: Path, name: str, force: bool = False) -> Path:
    """The model folder repo/name, refused (before anything is written) for a bad name or an entry that exists."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"{name!r} is not a valid Triton model name")
    folder = repo / name
    if folder.exists() and not force:
        raise OutputExistsError(f"{folder}: already exists (use --force to overwrite)")
    return folder


def write_repository(onnx_path: Path, repo: Path, name: str, force: bool = False, max_batch_size: int = 64) -> Path:
    """Write repo/name/config.pbtxt and repo/name/1/model.onnx; returns the model folder."""
    import onnx

    folder = check_repository(repo, name, force)
    proto = onnx.load(str(onnx_path), load_external_data=False)
    (folder / "1").mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "1" / "model.onnx") as tmp:
        shutil.copyfile(onnx_path, tmp)
    atomic_write_text(folder / "config.pbtxt", config_pbtxt(proto, name, max_batch_size))
    return folder
