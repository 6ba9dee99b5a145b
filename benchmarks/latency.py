"""Latency and throughput of ONNX variants (and the Keras original) per provider and batch size."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.runtime.contract import INPUT_NAME


@dataclass
class Timing:
    """Statistics of one model x provider x batch size; times in milliseconds per batch."""

    model: str
    provider: str
    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    images_per_s: float
    first_run_ms: float  # the first call after session start (CUDA: cuDNN algorithm search)
    peak_rss_mb: float | None = None
    gmacs_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(times_ms: list[float], batch: int) -> dict[str, float]:
    """Percentiles (linear interpolation), mean, min and images/s from the median batch time."""
    arr = np.asarray(times_ms, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(arr.mean()),
            "min_ms": float(arr.min()), "images_per_s": float(batch * 1000.0 / p50)}


def time_calls(fn: Callable[[], Any], warmup: int, runs: int) -> tuple[float, list[float]]:
    """(first call ms, steady-state call times ms) of ``fn``; warm-up calls are not timed."""
    start = time.perf_counter()
    fn()
    first = (time.perf_counter() - start) * 1000.0
    for _ in range(max(0, warmup - 1)):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return first, times


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark for this process (Linux); silently nothing elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def time_onnx(path: Path, providers: list[str], batch: int, images: np.ndarray, warmup: int, runs: int,
              threads: int | None, macs_per_image: float | None = None,
              spin: bool = False) -> tuple[list[Timing], list[str]]:
    """``path`` on each of ``providers`` (cpu, cuda, openvino) at one batch size, timed interleaved:
    every round calls each session once, in an order that alternates from round to round, so that a
    busy spell of a shared machine falls on all of them alike. A provider that cannot open the model or
    fails during the rounds is left out with its error (the rest are still timed). A row's peak RSS is
    the process's, read after that provider's session opened and warmed up (so it includes the
    sessions of the providers before it)."""
    from digitloc.runtime.detector import open_session

    calls, errors, first, rss = {}, [], {}, {}
    feed = {INPUT_NAME: images[:batch]}
    for provider in providers:
        try:
            reset_peak_rss()
            session = open_session(path, provider, threads, spin)
            # Every output: a detector's top-K decoding runs inside the graph and is timed with the model.
            call = functools.partial(session.run, [o.name for o in session.get_outputs()], feed)
            first[provider] = time_calls(call, warmup, 0)[0]
            rss[provider], calls[provider] = peak_rss_mb(), call
        except Exception as exc:  # one provider failing must not lose the rest
            errors.append(f"{path.name} on {provider}: {exc}")
    times: dict[str, list[float]] = {p: [] for p in calls}
    for n in range(runs):
        order = list(calls)
        for provider in order if n % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            try:
                calls[provider]()
            except Exception as exc:
                errors.append(f"{path.name} on {provider}, timed run {n + 1}: {exc}")
                del calls[provider], times[provider]
                continue
            times[provider].append((time.perf_counter() - start) * 1000.0)
    rows = []
    for provider in calls:
        stats = summarize(times[provider], batch)
        gmacs = macs_per_image * stats["images_per_s"] / 1e9 if macs_per_image else None
        rows.append(Timing(path.name, provider, batch, runs, **stats, first_run_ms=first[provider],
                           peak_rss_mb=rss[provider], gmacs_per_s=gmacs))
    return rows, errors


def time_keras(path: Path, batch: int, images: np.ndarray, warmup: int, runs: int) -> Timing:
    """The Keras model called directly (no predict() machinery), on TensorFlow's CPU."""
    from digitloc.train.model import load_model

    reset_peak_rss()
    model = load_model(path)
    x = images[:batch]
    first, times = time_calls(lambda: model(x, training=False), warmup, runs)
    return Timing(path.name, "keras-tf-cpu", batch, runs, **summarize(times, batch), first_run_ms=first,
                  peak_rss_mb=peak_rss_mb())


def time_refine(path: Path, photos: list[np.ndarray], batch: int, warmup: int, runs: int,
                threads: int | None, spin: bool = False) -> list[Timing]:
    """The runtime's whole path (``Detector.predict_batch``: preprocessing, model, boxes) on real
    photos, one pass against two (``refine``), timed in turn so that both see the same machine."""
    from digitloc.runtime.detector import Detector

    detectors = {f"cpu detector{' + refine' if r else ''}":
                 Detector(path, provider="cpu", threads=threads, refine=r, spin=spin) for r in (False, True)}
    chunk = [photos[i % len(photos)] for i in range(batch)]
    times: dict[str, list[float]] = {name: [] for name in detectors}
    first = {name: time_calls(lambda d=d: d.predict_batch(chunk), warmup, 0)[0] for name, d in detectors.items()}
    for _ in range(runs):
        for name, d in detectors.items():
            start = time.perf_counter()
            d.predict_batch(chunk)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return [Timing(path.name, name, batch, runs, **summarize(times[name], batch), first_run_ms=first[name])
            for name in detectors]


def matmul_gmacs(n: int = 2048, runs: int = 10) -> float:
    """What this machine reaches on a plain float32 matrix product (numpy/BLAS), in GMAC/s."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    _, times = time_calls(lambda: a @ b, warmup=2, runs=runs)
    return n ** 3 / (min(times) / 1000.0) / 1e9
