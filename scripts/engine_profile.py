"""Where onnxruntime and OpenVINO spend their time on the same int8 ONNX file, layer by layer.

    python scripts/engine_profile.py models/digitloc-default-int8.onnx --batch 32 \
        -o benchmarks/results/engine-profile/default-b32.md

onnxruntime's profiler (the runtime's session options) and OpenVINO's performance counters (as
``--provider openvino`` compiles the model: static shape, latency hint, f32 float layers) on the
same random batch; time per image by kind of operation, and the convolutions in the order they
run side by side (both engines run the model's convolutions in graph order, so the n-th of one is
the n-th of the other). Calls alternate between the engines. LiteRT has no per-op profiler in its
Python package: it is left out here.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import click
import numpy as np

CONV_ORT = ("QLinearConv", "Conv", "FusedConv", "NchwcConv", "ConvInteger")


def ort_profile(path: Path, x: np.ndarray, calls: int) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
    """Microseconds per call by op type, and the convolutions in run order (name, op, microseconds per call)."""
    import onnxruntime as ort

    from digitloc.runtime.contract import INPUT_NAME
    from digitloc.runtime.detector import session_options

    options = session_options()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {INPUT_NAME: x})
        for _ in range(calls):
            session.run(None, {INPUT_NAME: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    per_node: dict[str, list] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name, op = e["name"][:-len("_kernel_time")], e["args"].get("op_name", "")
            by_op[op] += e["dur"] / (calls + 1)
            entry = per_node.setdefault(name, [e["ts"], op, 0.0])
            entry[2] += e["dur"] / (calls + 1)
    convs = [(name, op, t) for name, (_, op, t) in sorted(per_node.items(), key=lambda kv: kv[1][0]) if op in CONV_ORT]
    return dict(by_op), convs


def ov_profile(path: Path, x: np.ndarray, calls: int) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
    """The same from OpenVINO's performance counters (real time, microseconds per call)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    name = model.inputs[0].get_any_name()
    model.reshape({name: list(x.shape)})
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                                 "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    by_op: dict[str, float] = defaultdict(float)
    per_node: dict[str, list] = {}
    request.infer({name: x})
    for _ in range(calls):
        request.infer({name: x})
        for i, info in enumerate(request.profiling_info):
            if info.status != info.Status.EXECUTED:
                continue
            us = info.real_time.total_seconds() * 1e6 / calls
            by_op[f"{info.node_type} ({info.exec_type})"] += us
            entry = per_node.setdefault(info.node_name, [i, info.node_type, 0.0, info.exec_type])
            entry[2] += us
    convs = [(n, f"{op} ({ex})", t) for n, (_, op, t, ex) in sorted(per_node.items(), key=lambda kv: kv[1][0])
             if op == "Convolution"]
    return dict(by_op), convs


def profile_markdown(path: Path, batch: int, calls: int) -> str:
    from digitloc.runtime.cpuinfo import cpu_report
    from digitloc.runtime.detector import Detector

    h, w = Detector(path, provider="cpu").input_size
    x = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    ort_ops, ort_convs = ort_profile(path, x, calls)
    ov_ops, ov_convs = ov_profile(path, x, calls)
    per = 1000.0 * batch  # microseconds per call -> milliseconds per image
    md = (f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`\n\n"
          f"CPU: {cpu_report()['summary']}\n\n{path.name}, batch {batch}, {calls} calls each after one warm-up; "
          "kernel time per image (onnxruntime's profiler; OpenVINO's performance counters, real time).\n\n")
    for engine, ops in (("onnxruntime", ort_ops), ("OpenVINO", ov_ops)):
        total = sum(ops.values())
        md += f"### {engine}: {total / per:.4f} ms per image in kernels\n\n| op | ms per image | share |\n|---|---|---|\n"
        md += "".join(f"| {op} | {t / per:.4f} | {100 * t / total:.1f} % |\n"
                      for op, t in sorted(ops.items(), key=lambda kv: -kv[1]) if t / total >= 0.005)
        md += "\n"
    md += ("### Convolutions in the order they run\n\n| # | onnxruntime op | ms per image | OpenVINO op | ms per image "
           "| onnxruntime / OpenVINO |\n|---|---|---|---|---|---|\n")
    for i in range(max(len(ort_convs), len(ov_convs))):
        a = ort_convs[i] if i < len(ort_convs) else ("", "-", float("nan"))
        b = ov_convs[i] if i < len(ov_convs) else ("", "-", float("nan"))
        md += f"| {i + 1} | {a[1]} | {a[2] / per:.4f} | {b[1]} | {b[2] / per:.4f} | {a[2] / b[2]:.2f}x |\n"
    return md


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--batch", default=32, show_default=True)
@click.option("--calls", default=10, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Markdown file to write (printed either way).")
def main(model: Path, batch: int, calls: int, output: Path | None) -> None:
    """Per-layer kernel time of onnxruntime and OpenVINO on one int8 ONNX file."""
    md = profile_markdown(model, batch, calls)
    click.echo(md)
    if output:
        from digitloc.runtime.fileio import atomic_write_text

        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, md)


if __name__ == "__main__":
    main()
