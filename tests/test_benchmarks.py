"""digitloc-bench: statistics on known timings, drift figures on a hand-made case, tiny end-to-end runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from digitloc.annotations.metrics import agreement
from digitloc.benchmarks.cli import main
from digitloc.benchmarks.latency import summarize, time_calls, time_onnx


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


def test_time_calls_excludes_warmup(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that call k moves on by k ms: the first call is reported alone, the other warm-up
    # calls (2, 3) are not timed, and the timed runs are calls 4..10.
    from digitloc.benchmarks import latency

    clock = [0.0]
    calls = []

    def call() -> None:
        calls.append(1)
        clock[0] += len(calls) / 1000.0

    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    first, times = time_calls(call, warmup=3, runs=7)
    assert len(calls) == 3 + 7 and first == pytest.approx(1.0)
    assert times == pytest.approx([float(k) for k in range(4, 11)])


def test_providers_are_timed_in_alternating_turns_and_a_failing_one_is_left_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from digitloc.runtime import detector

    calls: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def get_outputs(self) -> list[SimpleNamespace]:
            return [SimpleNamespace(name="boxes")]

        def run(self, names: list[str], feed: dict) -> list[np.ndarray]:
            assert names == ["boxes"]
            calls.append(self.name)
            return [np.zeros(1)]

    class Breaks(Fake):
        def run(self, names: list[str], feed: dict) -> list[np.ndarray]:
            if len([c for c in calls if c == self.name]) >= 3:
                raise RuntimeError("out of memory")
            return super().run(names, feed)

    def fake_open(path: Path, provider: str, threads: int | None, spin: bool) -> Fake:
        if provider == "cuda":
            raise RuntimeError("no CUDA here")
        return Breaks(provider) if provider == "breaks" else Fake(provider)

    monkeypatch.setattr(detector, "open_session", fake_open)
    images = np.zeros((4, 8, 8, 3), np.uint8)
    rows, errors = time_onnx(Path("m.onnx"), ["cpu", "cuda", "openvino"], 2, images, warmup=2, runs=4, threads=None)
    assert [r.provider for r in rows] == ["cpu", "openvino"] and all(r.runs == 4 for r in rows)
    assert errors == ["m.onnx on cuda: no CUDA here"]
    # 2 warm-up calls each, then rounds in alternating order.
    assert calls == ["cpu", "cpu", "openvino", "openvino"] + ["cpu", "openvino", "openvino", "cpu"] * 2
    # One that fails in the timed rounds is dropped with its error; the others are still timed.
    calls.clear()
    rows, errors = time_onnx(Path("m.onnx"), ["cpu", "breaks"], 2, images, warmup=2, runs=4, threads=None)
    assert [r.provider for r in rows] == ["cpu"] and len([c for c in calls if c == "cpu"]) == 2 + 4
    assert errors == ["m.onnx on breaks, timed run 2: out of memory"]


def test_latency_times_openvino_beside_onnxruntime(tiny_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["latency", str(tiny_onnx), "--providers", "cpu,openvino", "--batches", "2",
                                       "--runs", "3", "--warmup", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "latency.json").read_text())["rows"]
    assert [(r["provider"], r["batch"]) for r in rows] == [("cpu", 2), ("openvino", 2)]
    assert f"{tiny_onnx.name} at batch 2: OpenVINO" in (out / "latency.md").read_text()


def test_drift_figures_on_a_hand_made_case() -> None:
    ref_boxes = np.array([[0, 0, 1, 1], [0, 0, 0.5, 0.5]], np.float32)
    ref_probs = np.array([[0.9, 0.1] + [0] * 8, [0.2, 0.8] + [0] * 8], np.float32)
    boxes = np.array([[0, 0, 1, 0.5], [0, 0, 0.5, 0.5]], np.float32)
    probs = np.array([[0.4, 0.6] + [0] * 8, [0.2, 0.8] + [0] * 8], np.float32)
    r = agreement((ref_boxes, ref_probs), (boxes, probs))
    assert r["class_agreement"] == 0.5
    assert r["bbox_max_abs_diff"] == pytest.approx(0.5) and r["bbox_mean_abs_diff"] == pytest.approx(0.5 / 8)
    assert r["digit_max_abs_diff"] == pytest.approx(0.5)
    assert r["box_iou_mean"] == pytest.approx(0.75) and r["box_iou_min"] == pytest.approx(0.5)


def test_latency_times_each_model_at_its_own_input_size(tiny_onnx: Path, tmp_path: Path) -> None:
    # A 64x32 model beside the 32x32 one: each gets images of its own size (no shape errors).
    import keras

    from digitloc.export.api import ExportConfig, export_model
    from digitloc.export.quantize import Fp32Config
    from digitloc.train.model import ModelConfig, build_model

    wide = tmp_path / "wide.keras"
    keras.utils.set_random_seed(3)  # untrained weights: a fixed draw (box IoU 0.99994 against the gate's 0.999; seed 0's
    # draw sits under it), so the gate reads the same each run
    build_model(ModelConfig(input_size=(32, 64), width=0.125, batchnorm=True, box_units=(16,),
                            class_units=(16,))).save(wide)
    wide_onnx = tmp_path / "wide-fp32.onnx"
    # An untrained model without a run folder: no photos to check it on.
    export_model(wide, ExportConfig(output=wide_onnx, quant=Fp32Config(), parity_random=True))
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["latency", str(tiny_onnx), str(wide_onnx), "--batches", "2", "--runs", "2",
                                       "--warmup", "1", "--spin", "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "latency.json").read_text())
    assert not payload["errors"] and {r["model"] for r in payload["rows"]} == {tiny_onnx.name, wide_onnx.name}
    assert payload["spin"] is True and ", spinning between calls" in (out / "latency.md").read_text()
    macs = payload["macs_per_image"]
    assert 1.8 < macs[wide_onnx.name] / macs[tiny_onnx.name] < 2.2  # twice the pixels, about twice the MACs


def test_latency_and_drift_commands_end_to_end(tiny_run: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["latency", str(tiny_onnx), "--keras", str(tiny_run / "model.keras"),
                                       "--batches", "1,4", "--runs", "3", "--warmup", "1", "-o", str(out)])
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
    # The fp32 twin is found by the metadata's precision, whatever the file is called ("big-ref").
    rows[2]["model"] = "big-ref.onnx"
    lines = _ratios(rows, {"small-fp32.onnx": 1e8, "small-int8.onnx": 1e8, "big-ref.onnx": 1.6e9, "big-int8.onnx": 1.6e9},
                    {"small-fp32.onnx": "fp32", "small-int8.onnx": "int8-static", "big-ref.onnx": "fp32",
                     "big-int8.onnx": "int8-static"})
    assert "small-int8.onnx vs small-fp32.onnx (cpu) at batch 32: 2.50x throughput" in lines
    assert "big-int8.onnx vs big-ref.onnx (cpu) at batch 32: 4.00x throughput" in lines
    assert "small-fp32.onnx (cpu) vs Keras at batch 32: 2.50x faster" in lines
    assert not any(line.startswith("big-") and "Keras" in line for line in lines)
    assert not any("small-" in line and "big-ref" in line for line in lines)


def test_latency_on_a_provider_this_machine_lacks_is_errors_not_a_traceback(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["latency", str(tiny_onnx), "--providers", "cuda", "--batches", "1,2",
                                       "--runs", "2", "--warmup", "1", "-o", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # sys.exit(1), not an uncaught error
    assert result.output.count(f"error: {tiny_onnx.name} on cuda:") == 2
    assert "no chart: no configuration could be timed" in result.output and "Traceback" not in result.output
    assert json.loads((out / "latency.json").read_text())["rows"] == [] and not (out / "latency.png").exists()


def test_reports_name_the_cpu_instruction_set(tmp_path: Path, tiny_run: Path, tiny_onnx: Path) -> None:
    from digitloc.benchmarks.report import environment
    from digitloc.runtime.cpuinfo import cpu_report, int8_path

    env = environment()
    assert env["isa"] == cpu_report()["isa"] and env["int8_path"] and "onnxruntime" in env["cpu_summary"]
    assert int8_path(["avx2"]).startswith("avx2 without vnni") and int8_path(["avx2", "avx512_vnni"]).startswith("vnni")
    assert int8_path(["neon", "dotprod"]).startswith("arm dotprod") and int8_path([]) == "unknown"
    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    out = tmp_path / "d"
    result = CliRunner().invoke(main, ["drift", str(tiny_run / "model.keras"), str(tiny_onnx), "--data",
                                       str(data / "val.npz"), "--kind", "all", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert env["cpu_summary"] in (out / "drift.md").read_text()
    assert json.loads((out / "drift.json").read_text())["environment"]["isa"] == env["isa"]


def test_probe_runs_models_without_digitloc(tmp_path: Path, tiny_onnx: Path) -> None:
    # The probe that runs under emulation: a bare interpreter, numpy + onnxruntime only.
    import subprocess
    import sys

    from digitloc.benchmarks.emulate import PROBE
    from digitloc.export.parity import onnx_predict

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "in.npz", images=images)
    subprocess.run([sys.executable, "-I", str(PROBE), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                    str(tiny_onnx), str(tiny_onnx)], check=True, capture_output=True, cwd=tmp_path)
    out = np.load(tmp_path / "out.npz")
    boxes, probs = onnx_predict(tiny_onnx, images)
    np.testing.assert_array_equal(out["1_bbox"], boxes)
    np.testing.assert_array_equal(out["0_digit"], probs)


def test_drift_on_outputs_computed_on_another_machine(tiny_run: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    # probe-inputs -> probe.py (as on a user's device) -> drift --outputs: the same figures as a
    # drift run here, the device's CPU named; outputs of other inputs are refused.
    import subprocess
    import sys

    from digitloc.benchmarks.emulate import PROBE

    data = Path(json.loads((tiny_run / "config.json").read_text())["data"]) / "val.npz"
    made = CliRunner().invoke(main, ["probe-inputs", "--data", str(data), "--kind", "all", "-o",
                                     str(tmp_path / "in.npz")])
    assert made.exit_code == 0, made.output
    subprocess.run([sys.executable, "-I", str(PROBE), str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                    str(tiny_onnx)], check=True, capture_output=True, cwd=tmp_path)
    args = ["drift", str(tiny_run / "model.keras"), str(tiny_onnx), "--data", str(data), "--kind", "all"]
    here = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "here")])
    there = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "there"), "--outputs", str(tmp_path / "out.npz")])
    assert here.exit_code == 0 and there.exit_code == 0, there.output
    a, b = (json.loads((tmp_path / d / "drift.json").read_text()) for d in ("here", "there"))
    assert a["variants"] == b["variants"] and "device" not in a
    assert b["device"]["isa"] == a["environment"]["isa"]  # the probe ran on this CPU here
    assert "the ONNX models ran there" in (tmp_path / "there" / "drift.md").read_text()
    out = dict(np.load(tmp_path / "out.npz"))
    out["images_sha256"] = np.array("0" * 64)
    np.savez(tmp_path / "other.npz", **out)
    refused = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x"), "--outputs", str(tmp_path / "other.npz")])
    assert refused.exit_code == 1 and "other inputs" in refused.output
    two = CliRunner().invoke(main, ["drift", str(tiny_run / "model.keras"), str(tiny_onnx), str(tiny_onnx), "--data",
                                    str(data), "--kind", "all", "-o", str(tmp_path / "y"), "--outputs",
                                    str(tmp_path / "out.npz")])
    assert two.exit_code == 1 and "for 2 models" in two.output


def test_emulated_commands_name_their_cpu(tmp_path: Path) -> None:
    from digitloc.benchmarks.cli import EMULATED
    from digitloc.benchmarks.emulate import TARGETS, EmulationError, _arm_cpuinfo, probe_command

    assert set(EMULATED) == set(TARGETS)
    text = _arm_cpuinfo(TARGETS["arm64"])
    assert text.count("processor\t:") == 2 and "asimddp" in text and "i8mm" not in text
    assert "i8mm" in _arm_cpuinfo(TARGETS["arm64-max"]) and "asimddp" not in _arm_cpuinfo(TARGETS["arm64-a72"])
    import shutil

    if shutil.which("qemu-x86_64") is None:
        with pytest.raises(EmulationError, match="qemu-user"):
            probe_command(TARGETS["avx2"], [], tmp_path, tmp_path)
    else:
        cmd, _ = probe_command(TARGETS["avx2"], ["a"], tmp_path, tmp_path)
        assert cmd[1:3] == ["-cpu", "Haswell"] and cmd[-1] == "a"
    if shutil.which("qemu-aarch64") is not None:
        with pytest.raises(EmulationError, match="no ARM64 sysroot"):
            probe_command(TARGETS["arm64"], [], tmp_path / "none", tmp_path)


def test_compare_ratios_and_interleaving() -> None:
    from digitloc.benchmarks.compare import Config, interleaved, ratios, summarize

    order: list[str] = []

    def runner(name: str):
        return lambda x: order.append(name)

    runners = {Config("onnxruntime", "int8", 1): runner("a"), Config("openvino", "int8", 1): runner("b")}
    rates = interleaved(runners, {1: np.zeros((1, 2, 2, 3), np.uint8)}, repeats=3, calls=2, warmup=1)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3  # warm-up, then round-robin
    assert all(len(r) == 3 for r in rates.values())
    rows = [{"runtime": "onnxruntime", "precision": "int8", "batch": 32, "images_per_s": 900.0},
            {"runtime": "openvino", "precision": "int8", "batch": 32, "images_per_s": 600.0},
            {"runtime": "litert", "precision": "int8", "batch": 32, "images_per_s": 450.0},
            {"runtime": "litert", "precision": "fp32", "batch": 1, "images_per_s": 450.0}]
    rows.append({"runtime": "auto", "precision": "int8", "batch": 32, "images_per_s": 1200.0})
    got = {(r["ours"], r["peer"], r["precision"], r["batch"]): r["ours_over_peer"] for r in ratios(rows)}
    assert got == {("onnxruntime", "openvino", "int8", 32): 1.5, ("onnxruntime", "litert", "int8", 32): 2.0,
                   ("auto", "openvino", "int8", 32): 2.0, ("auto", "litert", "int8", 32): 1200 / 450}
    assert summarize({Config("litert", "fp32", 1): [3.0, 1.0, 2.0]})[0]["images_per_s"] == 2.0
    # Agreement runs every image at the configuration's own batch size; the last batch is padded.
    from digitloc.benchmarks.compare import run_all

    sizes: list[int] = []

    def fixed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(len(x))
        assert len(x) == 4  # like LiteRT, this runner takes one batch size only
        return x[:, 0, 0, :].astype(np.float32).repeat(2, axis=1)[:, :4], np.eye(10)[x[:, 0, 0, 0] % 10]

    images = (np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3))).astype(np.uint8)
    boxes, probs = run_all(fixed, images, 4)
    assert sizes == [4, 4, 4] and len(boxes) == len(probs) == 10
    assert np.argmax(probs, 1).tolist() == list(range(10))


def test_compare_runs_the_peers_on_the_tiny_model(tmp_path: Path, tiny_run: Path, tiny_onnx: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    out = tmp_path / "c"
    monkeypatch.setenv("DIGITLOC_CACHE_DIR", str(tmp_path / "user-cache"))
    before = os.environ.get("DIGITLOC_CACHE_DIR")
    result = CliRunner().invoke(main, ["compare", str(tiny_run / "model.keras"), "--int8", str(tiny_onnx), "--fp32",
                                       str(tiny_onnx), "--data", str(data), "--kind", "all", "--runtimes",
                                       "onnxruntime,auto,openvino", "--batches", "1,4", "--repeats", "2", "--calls", "1",
                                       "--warmup", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "compare.json").read_text())
    assert {(r["runtime"], r["batch"]) for r in payload["rows"]} >= {("openvino", 1), ("onnxruntime", 4)}
    assert payload["environment"]["isa"] is not None and cv2.imread(str(out / "compare.png")) is not None
    ov_fp32 = next(r for r in payload["agreement"] if r["runtime"] == "openvino" and r["precision"] == "fp32")
    assert ov_fp32["class_agreement"] >= 0.95
    # auto (the default read) probed afresh for one photo and for several, and says what it chose.
    assert {c["size_class"] for c in payload["auto_choices"]} == {"one", "many"}
    assert all(c["engine"] in ("onnxruntime", "openvino") for c in payload["auto_choices"])
    # (--int8 and --fp32 are one file here: the second detector on it may read the first one's probe.)
    assert all(any(not c["cached"] for c in payload["auto_choices"] if c["size_class"] == cls) for cls in ("one", "many"))
    # The user's own probe cache is neither read nor written: the run probes afresh.
    assert not (tmp_path / "user-cache" / "engines.json").exists()
    assert "What `auto` (the default read)" in (out / "compare.md").read_text()
    assert os.environ.get("DIGITLOC_CACHE_DIR") == before


def test_compare_measures_agreement_on_more_real_photos_too(tmp_path: Path, tiny_run: Path, tiny_onnx: Path) -> None:
    """--agreement-data adds photos to the agreement (held-out ones and those, together) and says how many;
    a folder of another photo size is refused with one line naming it."""
    data = Path(json.loads((tiny_run / "config.json").read_text())["data"])
    from digitloc.annotations.dataset.data import DataSet

    args = ["compare", str(tiny_run / "model.keras"), "--int8", str(tiny_onnx), "--fp32", str(tiny_onnx),
            "--data", str(data), "--kind", "all", "--runtimes", "onnxruntime", "--batches", "1", "--repeats", "1",
            "--calls", "1", "--warmup", "1"]
    result = CliRunner().invoke(main, [*args, "--agreement-data", str(data), "-o", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert payload["agreement_all_samples"] == 2 * payload["agreement_samples"] > 0
    rows = {(r["precision"], r["batch"]): r for r in payload["agreement_all"]}
    assert rows[("fp32", 1)]["class_agreement"] == 1.0 and set(rows) == {("fp32", 1), ("int8", 1)}
    held = {(r["precision"], r["batch"]): r for r in payload["agreement"]}
    assert rows[("int8", 1)]["class_agreement"] == held[("int8", 1)]["class_agreement"] == 1.0  # one file as both
    assert "real photos never trained on" in (tmp_path / "c" / "compare.md").read_text()
    other = tmp_path / "other"
    other.mkdir()
    DataSet(np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 4), np.float32), np.zeros(2, np.int64),
            np.array(["crop"] * 2), np.array(["a", "b"])).save(other / "test.npz")
    result = CliRunner().invoke(main, [*args, "--agreement-data", str(other), "-o", str(tmp_path / "d")])
    assert result.exit_code != 0 and f"{other}: its photos are 16x16" in result.output


def test_ceiling_turns_rates_into_multiply_add_rates_and_judges_the_target() -> None:
    from digitloc.benchmarks.ceiling import ceiling_rows, int8_rates

    compare = {"rows": [{"runtime": "onnxruntime", "precision": "int8", "batch": 32, "images_per_s": 2000.0},
                        {"runtime": "openvino", "precision": "int8", "batch": 32, "images_per_s": 3000.0},
                        {"runtime": "litert", "precision": "int8", "batch": 32, "images_per_s": 2000.0},
                        {"runtime": "litert", "precision": "fp32", "batch": 32, "images_per_s": 9000.0}]}
    got = ceiling_rows(int8_rates(compare), macs=2e8, peak=1000.0, gemm=700.0)  # 0.2 GMAC per image
    assert [(r["runtime"], r["gmacs_per_s"], r["of_peak"]) for r in got["rates"]] == [
        ("onnxruntime", pytest.approx(400.0), pytest.approx(0.4)), ("openvino", pytest.approx(600.0), pytest.approx(0.6)),
        ("litert", pytest.approx(400.0), pytest.approx(0.4))]
    needs = {n["target"]: n for n in got["needs"]}
    assert needs["1x openvino"]["gmacs_per_s"] == pytest.approx(600.0)
    assert (needs["1x openvino"]["beyond_peak"], needs["1x openvino"]["beyond_gemm"]) == (False, False)
    assert needs["1.5x litert"]["gmacs_per_s"] == pytest.approx(600.0)
    assert ceiling_rows(int8_rates(compare), macs=4e8, peak=1000.0, gemm=700.0)["needs"][0]["beyond_peak"] is True  # 1,200
    assert ceiling_rows(int8_rates(compare), macs=2e8, peak=None, gemm=700.0)["needs"][0]["beyond_peak"] is None


def test_ceiling_probe_choice_follows_the_cpu() -> None:
    from digitloc.benchmarks.ceiling import pick_probe

    assert pick_probe({"avx2", "avx512_vnni", "avx_vnni"}, "x86_64")[0].flag == "avx512_vnni"
    assert pick_probe({"avx2", "avx_vnni"}, "x86_64")[0].flag == "avx_vnni"
    assert pick_probe({"avx2"}, "x86_64")[0].macs == 32
    assert pick_probe({"avx512_vnni", "amx_int8"}, "x86_64")[0] is None  # a VNNI peak would understate AMX
    assert "x86 only" in pick_probe({"neon"}, "aarch64")[1]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_ceiling_probe_binary_runs_the_counted_instructions(tmp_path: Path, index: int) -> None:
    """The MAC count is steps x MACs each: the built loop must multiply exactly once per step of each chain."""
    import shutil
    import subprocess

    from digitloc.benchmarks.ceiling import PROBES, probe_source

    if shutil.which("cc") is None or shutil.which("objdump") is None:
        pytest.skip("needs cc and objdump")
    probe = PROBES[index]  # assembling needs no CPU support: nothing runs here
    src = tmp_path / "p.c"
    src.write_text(probe_source(probe))
    done = subprocess.run(["cc", "-O1", "-pthread", *probe.cflags, "-c", str(src), "-o", str(tmp_path / "p.o")],
                          capture_output=True, text=True)
    if done.returncode != 0 and "unrecognized" in done.stderr:
        pytest.skip(f"this compiler lacks {probe.cflags}")
    assert done.returncode == 0, done.stderr
    listing = subprocess.run(["objdump", "-d", str(tmp_path / "p.o")], capture_output=True, text=True).stdout
    assert listing.count(probe.mnemonic) == probe.chains


def test_ceiling_instruction_peak_runs_and_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from digitloc.benchmarks.ceiling import PROBES, instruction_peak
    from digitloc.runtime.cpuinfo import cpu_features

    if shutil.which("cc") is None or "avx2" not in cpu_features()["isa"]:
        pytest.skip("needs cc and an AVX2 CPU")
    got = instruction_peak(PROBES[2], threads=1, repeats=1, seconds=0.02)
    # One core does 32 MACs per step and at most a few steps per cycle at a few GHz.
    assert got["threads"] == 1 and 1.0 < got["gmacs_per_s"] < 1000.0
    with pytest.raises(RuntimeError, match="threads must be 1-256"):
        instruction_peak(PROBES[2], threads=0)
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    with pytest.raises(RuntimeError, match="cannot build the"):
        instruction_peak(PROBES[2], threads=1)
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(RuntimeError, match="no C compiler"):
        instruction_peak(PROBES[2], threads=1)


def test_ceiling_command_reports_and_refuses_other_files(tmp_path: Path, tiny_onnx: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from digitloc.benchmarks import ceiling
    from digitloc.benchmarks.macs import count_macs

    macs = count_macs(tiny_onnx)
    monkeypatch.setattr(ceiling, "instruction_peak", lambda probe, threads: {
        "instruction": probe.name, "threads": threads, "gmacs_per_s": 1000.0})
    monkeypatch.setattr(ceiling, "pick_probe", lambda flags, arch: (ceiling.PROBES[0], ""))
    monkeypatch.setattr(ceiling, "gemm_peak", lambda threads: {"gmacs_per_s": 800.0, "shape": [8, 8, 8],
                                                                "threads": threads})
    per_image = 1e9 / macs  # images/s that make 1 GMAC/s
    compare = {"environment": {"cpu_summary": "another CPU"},
               "rows": [{"runtime": "openvino", "precision": "int8", "batch": 1, "images_per_s": 500 * per_image},
                        {"runtime": "litert", "precision": "int8", "batch": 1, "images_per_s": 700 * per_image}]}
    (tmp_path / "compare.json").write_text(json.dumps(compare))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["ceiling", str(tmp_path / "compare.json"), "--model", str(tiny_onnx),
                                       "--threads", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "ceiling.json").read_text())
    needs = {n["target"]: n for n in payload["needs"]}
    assert needs["1.5x litert"]["gmacs_per_s"] == pytest.approx(1050.0) and needs["1.5x litert"]["beyond_peak"]
    assert not needs["1x openvino"]["beyond_peak"]
    md = (out / "ceiling.md").read_text()
    assert "names another CPU or onnxruntime" in md and "| 1.5x litert | 1 |" in md
    assert cv2.imread(str(out / "ceiling.png")) is not None
    result = CliRunner().invoke(main, ["ceiling", str(tmp_path / "compare.json"), "--model", str(tiny_onnx),
                                       "--threads", "1", "-o", str(out)])
    assert result.exit_code == 1 and "already exists (use --force" in result.output
    (tmp_path / "bad.json").write_text("{}")
    result = CliRunner().invoke(main, ["ceiling", str(tmp_path / "bad.json"), "--model", str(tiny_onnx)])
    assert result.exit_code == 1 and "bad.json: not a digitloc-bench compare result" in result.output
    compare["rows"] = [{"runtime": "litert", "precision": "fp32", "batch": 1, "images_per_s": 5.0}]
    (tmp_path / "fp32.json").write_text(json.dumps(compare))
    result = CliRunner().invoke(main, ["ceiling", str(tmp_path / "fp32.json"), "--model", str(tiny_onnx)])
    assert result.exit_code == 1 and "fp32.json: no int8 rows" in result.output
    compare["rows"] = [{"runtime": "litert", "batch": 1}]
    (tmp_path / "rowless.json").write_text(json.dumps(compare))
    result = CliRunner().invoke(main, ["ceiling", str(tmp_path / "rowless.json"), "--model", str(tiny_onnx)])
    assert result.exit_code == 1 and "rowless.json: not a digitloc-bench compare result (KeyError" in result.output


def test_startup_runs_the_runtime_in_a_fresh_process(tiny_onnx: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["startup", "--model", str(tiny_onnx), "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "(median of 1)" in result.output and "on CPUExecutionProvider; TensorFlow loaded: False" in result.output
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"nonsense")
    result = CliRunner().invoke(main, ["startup", "--model", str(junk), "--repeats", "1"])
    assert result.exit_code == 1 and result.output.startswith("error: startup probe failed")
