"""digitloc-bench: statistics on known timings, drift figures on a hand-made case, tiny end-to-end runs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from digitloc.benchmarks.cli import main
from digitloc.benchmarks.latency import summarize, time_calls
from digitloc.export.parity import compare


def test_statistics_on_known_timings() -> None:
    times = list(range(1, 101))  # 1..100 ms per batch of 4
    stats = summarize([float(t) for t in times], batch=4)
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p90_ms"] == pytest.approx(90.1)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["mean_ms"] == pytest.approx(50.5) and stats["min_ms"] == 1.0
    assert stats["images_per_s"] == pytest.approx(4 * 1000 / 50.5)
    with pytest.raises(ValueError):
        summarize([], 1)


def test_time_calls_excludes_warmup() -> None:
    calls = []
    first, times = time_calls(lambda: calls.append(1), warmup=3, runs=7)
    assert len(calls) == 3 + 7 and len(times) == 7 and first >= 0


def test_drift_figures_on_a_hand_made_case() -> None:
    ref_boxes = np.array([[0, 0, 1, 1], [0, 0, 0.5, 0.5]], np.float32)
    ref_probs = np.array([[0.9, 0.1] + [0] * 8, [0.2, 0.8] + [0] * 8], np.float32)
    boxes = np.array([[0, 0, 1, 0.5], [0, 0, 0.5, 0.5]], np.float32)
    probs = np.array([[0.4, 0.6] + [0] * 8, [0.2, 0.8] + [0] * 8], np.float32)
    r = compare((ref_boxes, ref_probs), (boxes, probs))
    assert r["class_agreement"] == 0.5
    assert r["bbox_max_abs_diff"] == pytest.approx(0.5) and r["bbox_mean_abs_diff"] == pytest.approx(0.5 / 8)
    assert r["digit_max_abs_diff"] == pytest.approx(0.5)
    assert r["box_iou_mean"] == pytest.approx(0.75) and r["box_iou_min"] == pytest.approx(0.5)


def test_latency_times_each_model_at_its_own_input_size(tiny_onnx: Path, tmp_path: Path) -> None:
    # A 64x32 model beside the 32x32 one: each gets images of its own size (no shape errors).
    from digitloc.export.api import ExportConfig, export_model
    from digitloc.export.quantize import Fp32Config
    from digitloc.train.model import ModelConfig, build_model

    wide = tmp_path / "wide.keras"
    build_model(ModelConfig(input_size=(32, 64), width=0.125, batchnorm=True, box_units=(16,),
                            class_units=(16,))).save(wide)
    wide_onnx = tmp_path / "wide-fp32.onnx"
    export_model(wide, ExportConfig(output=wide_onnx, quant=Fp32Config()))
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["latency", str(tiny_onnx), str(wide_onnx), "--batch", "2", "--runs", "2",
                                       "--warmup", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "latency.json").read_text())
    assert not payload["errors"] and {r["model"] for r in payload["rows"]} == {tiny_onnx.name, wide_onnx.name}
    macs = payload["macs_per_image"]
    assert 1.8 < macs[wide_onnx.name] / macs[tiny_onnx.name] < 2.2  # twice the pixels, about twice the MACs


def test_latency_and_drift_commands_end_to_end(tiny_run: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["latency", str(tiny_onnx), "--keras", str(tiny_run / "model.keras"),
                                       "--batch", "1,4", "--runs", "3", "--warmup", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "latency.json").read_text())
    assert {(r["provider"], r["batch"]) for r in payload["rows"]} == {("cpu", 1), ("cpu", 4), ("keras-tf-cpu", 1),
                                                                      ("keras-tf-cpu", 4)}
    assert payload["macs_per_image"][tiny_onnx.name] > 0 and payload["matmul_gmacs_per_s"] > 0
    assert all(r["runs"] == 3 and r["p50_ms"] > 0 for r in payload["rows"])
    assert "| model | provider | batch |" in (out / "latency.md").read_text()
    assert cv2.imread(str(out / "latency.png")) is not None
    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    result = CliRunner().invoke(main, ["drift", str(tiny_run / "model.keras"), str(tiny_onnx),
                                       "--data", str(data / "val.npz"), "--kind", "all", "-o", str(out)])
    assert result.exit_code == 0, result.output
    drift = json.loads((out / "drift.json").read_text())
    (variant,) = drift["variants"]
    assert drift["samples"] == 64 and variant["vs_keras"]["class_agreement"] == 1.0
    assert abs(variant["delta_class_accuracy"]) < 1e-9
    assert cv2.imread(str(out / "drift.png")) is not None and (out / "drift.md").read_text().count("|") > 20
    again = CliRunner().invoke(main, ["drift", str(tiny_run / "model.keras"), str(tiny_onnx),
                                      "--data", str(data / "val.npz"), "--kind", "all", "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    # With the latency run beside it: the accuracy-vs-latency chart too.
    charted = CliRunner().invoke(main, ["drift", str(tiny_run / "model.keras"), str(tiny_onnx), "--data",
                                        str(data / "val.npz"), "--kind", "all", "-o", str(out), "--force",
                                        "--latency", str(out / "latency.json")])
    assert charted.exit_code == 0, charted.output
    assert cv2.imread(str(out / "accuracy-latency.png")) is not None
    # A latency file without these models is refused by name.
    (tmp_path / "other.json").write_text(json.dumps({"rows": [{"model": "x.onnx", "provider": "cpu"}]}))
    refused = CliRunner().invoke(main, ["drift", str(tiny_run / "model.keras"), str(tiny_onnx), "--data",
                                        str(data / "val.npz"), "-o", str(tmp_path / "b2"), "--latency",
                                        str(tmp_path / "other.json")])
    assert refused.exit_code == 1 and f"holds no CPU timings of {tiny_onnx.name}" in refused.output


def test_ratios_pair_each_variant_with_the_fp32_of_its_own_architecture() -> None:
    from digitloc.benchmarks.cli import _ratios

    def row(model: str, per_s: float, provider: str = "cpu") -> dict:
        return {"model": model, "provider": provider, "batch": 32, "images_per_s": per_s, "p50_ms": 32000 / per_s}

    rows = [row("small-fp32.onnx", 1000), row("small-int8.onnx", 2500), row("big-fp32.onnx", 70),
            row("big-int8.onnx", 280), row("model.keras", 400, "keras-tf-cpu")]
    lines = _ratios(rows, {"small-fp32.onnx": 1e8, "small-int8.onnx": 1e8, "big-fp32.onnx": 1.6e9,
                           "big-int8.onnx": 1.6e9})
    assert "small-int8.onnx vs small-fp32.onnx (cpu) at batch 32: 2.50x throughput" in lines
    assert "big-int8.onnx vs big-fp32.onnx (cpu) at batch 32: 4.00x throughput" in lines
    assert "small-fp32.onnx (cpu) vs Keras at batch 32: 2.50x faster" in lines
    assert not any(line.startswith("big-") and "Keras" in line for line in lines)
    assert not any("small-" in line and "big-fp32" in line for line in lines)


def test_latency_on_a_provider_this_machine_lacks_is_errors_not_a_traceback(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["latency", str(tiny_onnx), "--providers", "cuda", "--batch", "1,2",
                                       "--runs", "2", "--warmup", "1", "-o", str(out)])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.count(f"error: {tiny_onnx.name} on cuda:") == 2
    assert "no chart: no configuration could be timed" in result.output and "Traceback" not in result.output
    assert json.loads((out / "latency.json").read_text())["rows"] == [] and not (out / "latency.png").exists()
