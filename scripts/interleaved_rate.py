"""Images per second of several ONNX files through onnxruntime, timed in turns (a quick A/B on a shared host).

    python scripts/interleaved_rate.py 32 models/digitloc-detector-int8.onnx other-int8.onnx

Random uint8 images at the first model's input size; each round times 3 calls of each model in
turn; the median over the rounds. Used for stage 6's speed (models/det192x96-s6-tried/speed.txt).
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main(batch: int, paths: list[str], rounds: int = 21, calls: int = 3) -> dict[str, float]:
    import onnxruntime as ort

    from digitloc.runtime.contract import INPUT_NAME
    from digitloc.runtime.detector import session_options

    sessions = [ort.InferenceSession(p, session_options(), providers=["CPUExecutionProvider"]) for p in paths]
    _, h, w, _ = sessions[0].get_inputs()[0].shape
    x = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    for s in sessions:
        s.run(None, {INPUT_NAME: x})
    rates: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for p, s in zip(paths, sessions, strict=True):
            start = time.perf_counter()
            for _ in range(calls):
                s.run(None, {INPUT_NAME: x})
            rates[p].append(calls * batch / (time.perf_counter() - start))
    return {p: float(np.median(r)) for p, r in rates.items()}


if __name__ == "__main__":
    for path, rate in main(int(sys.argv[1]), sys.argv[2:]).items():
        print(f"{path}: {rate:.1f} img/s")
