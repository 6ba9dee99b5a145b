"""Standalone probe: run ONNX models on preprocessed images and save their outputs.

Imports numpy and onnxruntime only (no digitloc), so that it runs in a bare interpreter
under CPU emulation (qemu-user with an aarch64 Python, or x86 Python with fewer features):

    python probe.py images.npz outputs.npz model-a.onnx model-b.onnx

``images.npz`` holds ``images`` (uint8 [N, H, W, 3]); ``outputs.npz`` gets ``<i>_bbox`` and
``<i>_digit`` per model (in argument order), ``platform``/``onnxruntime`` strings, the CPU's
model and flags, and ``images_sha256`` (so that the outputs are checked against the same inputs).
Copied to a user's device (with the models and ``digitloc-bench probe-inputs``' file), it measures
int8 against fp32 on that device's own CPU: ``digitloc-bench drift --outputs`` reads its file.
"""

from __future__ import annotations

import hashlib
import platform
import sys


def cpu_text() -> tuple[str, str]:
    """The CPU model and flags line of /proc/cpuinfo (empty where there is none). The same reading
    as ``digitloc.runtime.cpuinfo``'s, kept here because the probe imports nothing of digitloc."""
    model = flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = value.strip()
    except OSError:
        pass
    return model, flags


def main(argv: list[str]) -> int:
    import numpy as np
    import onnxruntime as ort

    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    images = np.load(argv[0])["images"]
    model, flags = cpu_text()
    out: dict[str, object] = {"platform": np.array(platform.machine()), "onnxruntime": np.array(ort.__version__),
                              "cpu_model": np.array(model), "cpu_flags": np.array(flags),
                              "images_sha256": np.array(hashlib.sha256(np.ascontiguousarray(images)).hexdigest())}
    for i, path in enumerate(argv[2:]):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        boxes, probs = [], []
        for start in range(0, len(images), 32):
            b, p = session.run(["bbox", "digit"], {"image": images[start:start + 32]})
            boxes.append(b)
            probs.append(p)
        out[f"{i}_bbox"] = np.concatenate(boxes).astype(np.float32)
        out[f"{i}_digit"] = np.concatenate(probs).astype(np.float32)
        print(f"{path}: {len(images)} images", file=sys.stderr)
    np.savez(argv[1], **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
