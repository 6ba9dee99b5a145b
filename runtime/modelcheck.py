"""A loaded model checked against its own metadata, before it is trusted with a first photo.

A graph whose fixed input size contradicts ``digitloc.input_size`` (32x32 in the graph, 128x64 in
the metadata) loads, and then fails on every prediction: ``digitloc-serve`` would say "ok" at
/healthz and answer 500. Checked at startup (serve) and before the first photo (digitloc-run), it
is one line and no start instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitloc.runtime.contract import INPUT_NAME, META_INPUT_SIZE, ContractError, size_text


def check_model(detector: Any) -> None:
    """Raise ContractError (one line naming the file) when the detector's model cannot serve.

    The input's fixed dimensions must be N x H x W x 3 with the metadata's H and W, and one
    prediction on a blank input of that size must run (so a model that fails at its first
    prediction fails here, not on a user's photo)."""
    height, width = detector.input_size
    name = detector.model_path
    graph = next((i for i in detector.session.get_inputs() if i.name == INPUT_NAME), None)
    shape = list(graph.shape) if graph is not None else []
    if len(shape) != 4 or (isinstance(shape[3], int) and shape[3] != 3):
        raise ContractError(f"{name}: input {INPUT_NAME!r} has shape {shape}, the contract needs [N, H, W, 3]")
    fixed_h, fixed_w = (d if isinstance(d, int) and d > 0 else None for d in shape[1:3])
    if (fixed_h is not None and fixed_h != height) or (fixed_w is not None and fixed_w != width):
        graph_size = size_text((fixed_h or height, fixed_w or width))
        raise ContractError(f"{name}: the graph's input is {graph_size} but the metadata says "
                            f"{size_text((height, width))} ({META_INPUT_SIZE})")
    try:
        detector.run(np.zeros((1, height, width, 3), np.uint8))
    except ContractError:
        raise
    except Exception as exc:  # onnxruntime and OpenVINO raise their own types
        raise ContractError(f"{name}: fails on a blank {size_text((height, width))} input "
                            f"({first_line(exc)})") from None


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, for a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
