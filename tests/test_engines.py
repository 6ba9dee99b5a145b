"""provider="auto" on a CPU with OpenVINO installed: the probe picks the faster engine that agrees, caches it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from digitloc.runtime import engines
from digitloc.runtime.contract import DIGIT_OUTPUT
from digitloc.runtime.detector import Detector
from digitloc.runtime.engines import (
    ONNXRUNTIME,
    AutoSession,
    EngineCache,
    agreement,
    pick_engine,
    probe_images,
    size_class,
    time_engines,
)


@pytest.fixture(autouse=True)
def short_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe rounds of 4 images, not 64: the engines here are the tiny model (and a sleep)."""
    monkeypatch.setattr(engines, "PROBE_IMAGES", 4)


class Wrapped:
    """An engine made of the reference session: slower by ``delay`` seconds per call, or wrong."""

    def __init__(self, session: Any, delay: float = 0.0, wrong: bool = False) -> None:
        self.session, self.delay, self.wrong, self.calls = session, delay, wrong, 0

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        time.sleep(self.delay)
        out = self.session.run(names, feed)
        if self.wrong:
            out = [np.roll(o, 1, axis=1) if n == DIGIT_OUTPUT else o for n, o in zip(names, out, strict=True)]
        return out


def _auto(path: Path, cache: Path, engines: dict[str, Wrapped]) -> AutoSession:
    det = Detector(path, provider="cpu")
    return AutoSession(path, det.input_size, {name: (lambda e=e: e) for name, e in engines.items()},
                       cache=EngineCache(cache))


def test_probe_takes_the_faster_engine_and_caches_it(tiny_onnx: Path, tmp_path: Path) -> None:
    ref = Detector(tiny_onnx, provider="cpu").session
    slow_ort, fast_peer = Wrapped(ref, delay=0.02), Wrapped(ref)
    auto = _auto(tiny_onnx, tmp_path / "engines.json", {ONNXRUNTIME: slow_ort, "peer": fast_peer})
    images = probe_images((32, 32), 1)
    auto.run(["bbox", "digit"], {"image": images})
    choice = auto.choices["one"]
    assert choice.engine == "peer" and not choice.cached
    assert choice.images_per_s["peer"] > choice.images_per_s[ONNXRUNTIME]
    assert choice.agreement == {ONNXRUNTIME: 1.0, "peer": 1.0}
    assert "peer for one" in auto.describe()
    # Batches of several photos are another size class, probed on their own.
    auto.run(["bbox", "digit"], {"image": probe_images((32, 32), 3)})
    assert set(auto.choices) == {"one", "many"} and auto.choices["many"].batch == 32
    saved = json.loads((tmp_path / "engines.json").read_text())
    assert sorted(entry["size_class"] for entry in saved.values()) == ["many", "one"]
    # A new session on the same model, CPU and engines reads the cache: no probe, no call to the slow one.
    slow_again, peer_again = Wrapped(ref, delay=0.02), Wrapped(ref)
    again = _auto(tiny_onnx, tmp_path / "engines.json", {ONNXRUNTIME: slow_again, "peer": peer_again})
    again.run(["bbox", "digit"], {"image": images})
    assert again.choices["one"].cached and again.choices["one"].engine == "peer"
    assert slow_again.calls == 0 and peer_again.calls == 1


def test_an_engine_that_disagrees_or_fails_to_load_is_never_chosen(tiny_onnx: Path, tmp_path: Path) -> None:
    ref = Detector(tiny_onnx, provider="cpu").session
    slow_ort = Wrapped(ref, delay=0.01)

    def broken() -> Wrapped:
        raise RuntimeError("cannot compile this model")

    det = Detector(tiny_onnx, provider="cpu")
    auto = AutoSession(tiny_onnx, det.input_size, {ONNXRUNTIME: lambda: slow_ort,
                                                   "wrong": lambda: Wrapped(ref, wrong=True), "broken": broken},
                       cache=EngineCache(tmp_path / "engines.json"))
    auto.run(["bbox", "digit"], {"image": probe_images((32, 32), 1)})
    choice = auto.choices["one"]
    assert choice.engine == ONNXRUNTIME
    assert choice.agreement["wrong"] == 0.0 and "wrong" not in choice.images_per_s
    assert "broken" not in choice.agreement


def test_probe_warms_up_then_times_in_rounds_of_alternating_order() -> None:
    """Two warm-up calls each, then rounds of at least PROBE_IMAGES images (4 here, so 4 calls at batch 1 and
    2 at batch 3), the order reversed every other round: a load that rises through the probe favours none."""
    order: list[str] = []
    runners = {"a": lambda x: order.append("a"), "b": lambda x: order.append("b")}
    rates = time_engines(runners, np.zeros((1, 2, 2, 3), np.uint8), rounds=3)
    assert order == ["a"] * 2 + ["b"] * 2 + ["a"] * 4 + ["b"] * 4 + ["b"] * 4 + ["a"] * 4 + ["a"] * 4 + ["b"] * 4
    assert set(rates) == {"a", "b"} and all(r > 0 for r in rates.values())
    order.clear()
    time_engines(runners, np.zeros((3, 2, 2, 3), np.uint8), rounds=1)
    assert order == ["a"] * 2 + ["b"] * 2 + ["a"] * 2 + ["b"] * 2


def test_within_the_margin_onnxruntime_stays() -> None:
    assert pick_engine({ONNXRUNTIME: 100.0, "openvino": 102.0}) == ONNXRUNTIME
    assert pick_engine({ONNXRUNTIME: 100.0, "openvino": 104.0}) == "openvino"
    assert pick_engine({"openvino": 50.0, ONNXRUNTIME: 60.0}) == ONNXRUNTIME
    assert pick_engine({ONNXRUNTIME: 10.0}) == ONNXRUNTIME


def test_an_unreadable_cache_is_probed_again_and_rewritten(tiny_onnx: Path, tmp_path: Path) -> None:
    cache = tmp_path / "engines.json"
    cache.write_text("{not json")
    ref = Detector(tiny_onnx, provider="cpu").session
    auto = _auto(tiny_onnx, cache, {ONNXRUNTIME: Wrapped(ref)})
    auto.run(["bbox", "digit"], {"image": probe_images((32, 32), 1)})
    assert not auto.choices["one"].cached
    assert len(json.loads(cache.read_text())) == 1
    # A cache folder that cannot be written is no error: the probe's choice is used all the same.
    blocked = tmp_path / "file"
    blocked.write_text("x")
    auto = _auto(tiny_onnx, blocked / "engines.json", {ONNXRUNTIME: Wrapped(ref)})
    auto.run(["bbox", "digit"], {"image": probe_images((32, 32), 1)})
    assert auto.choices["one"].engine == ONNXRUNTIME


def test_probe_images_and_agreement() -> None:
    images = probe_images((64, 128), 4)
    assert images.shape == (4, 64, 128, 3) and images.dtype == np.uint8
    assert all(len(np.unique(im.reshape(-1, 3), axis=0)) > 1 for im in images)  # something drawn on each
    assert np.array_equal(images, probe_images((64, 128), 4))  # the same probe every time
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]], np.float32)
    digits = np.eye(10, dtype=np.float32)[[3, 7]]
    assert agreement([boxes, digits], [boxes, digits]) == 1.0
    assert agreement([boxes, digits], [boxes + [0.02, 0, 0.02, 0], digits]) == 1.0  # IoU 0.905
    assert agreement([boxes, digits], [boxes + [0.1, 0, 0.1, 0], digits]) == 0.0  # IoU 0.6
    assert agreement([boxes, digits], [boxes, digits[::-1]]) == 0.0
    assert size_class(1) == "one" and size_class(2) == size_class(256) == "many"


def test_auto_with_openvino_installed_runs_the_probe(tiny_onnx: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    monkeypatch.setenv("DIGITLOC_CACHE_DIR", str(tmp_path))
    assert Detector(tiny_onnx, provider="cpu").provider == "CPUExecutionProvider"  # cpu: onnxruntime, no probe
    for provider in ("auto", "fastest"):  # fastest: auto's name before auto took the probe
        det = Detector(tiny_onnx, provider=provider)
        if det.provider == "CUDAExecutionProvider":
            return
        assert det.provider.startswith("auto (onnxruntime, openvino")
    photo = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).astype(np.uint8)
    assert det.predict(photo).digit == Detector(tiny_onnx, provider="cpu").predict(photo).digit
    assert det.provider.startswith("auto: ") and (tmp_path / "engines.json").is_file()


def test_engine_profile_script_sets_the_two_engines_side_by_side(tiny_onnx: Path) -> None:
    pytest.importorskip("openvino")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from engine_profile import profile_markdown
    finally:
        sys.path.pop(0)
    md = profile_markdown(tiny_onnx, batch=2, calls=2)
    assert "### onnxruntime:" in md and "### OpenVINO:" in md
    rows = [line for line in md.splitlines() if line.startswith("| 1 |")]
    assert rows and "Convolution" in rows[0]  # the first convolution of each engine, side by side


def test_the_cache_follows_the_environment_at_each_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EngineCache()  # made before the environment names another folder (as a benchmark's runners are)
    monkeypatch.setenv("DIGITLOC_CACHE_DIR", str(tmp_path / "a"))
    assert cache.path == tmp_path / "a" / "engines.json"
    monkeypatch.setenv("DIGITLOC_CACHE_DIR", str(tmp_path / "b"))
    assert cache.path == tmp_path / "b" / "engines.json"


def test_auto_stays_on_onnxruntime_with_spin_or_a_broken_openvino(tiny_onnx: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With OpenVINO found: ``spin`` (an onnxruntime setting) keeps auto off the probe, and an OpenVINO that
    fails when the probe is set up leaves the Detector on onnxruntime, as if it were not installed."""
    from types import SimpleNamespace

    from digitloc.runtime import detector as detector_module

    monkeypatch.setattr(detector_module, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=lambda n: True)))
    tried: list[bool] = []

    def broken(*args: Any, **kwargs: Any) -> None:
        tried.append(True)
        raise RuntimeError("libopenvino.so: cannot open shared object file")

    monkeypatch.setattr(engines, "AutoSession", broken)
    on_cpu = ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert Detector(tiny_onnx, provider="auto", spin=True).provider in on_cpu and tried == []
    det = Detector(tiny_onnx, provider="auto")
    if det.provider == "CPUExecutionProvider":  # (on CUDA the probe is not for it)
        assert tried == [True]
    assert det.provider in on_cpu
    assert det.predict(np.zeros((40, 50, 3), np.uint8)).digit in range(10)


def test_openvino_keeps_the_compiled_batch_sizes_used_last(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from digitloc.runtime import openvino_backend

    monkeypatch.setattr(openvino_backend, "MAX_COMPILED", 2)
    session = openvino_backend.OpenVINOSession(tiny_onnx)
    for batch in (1, 2, 3, 1):
        session.run(["digit"], {"image": np.zeros((batch, 32, 32, 3), np.uint8)})
    assert session.compiled_batches == [3, 1]
