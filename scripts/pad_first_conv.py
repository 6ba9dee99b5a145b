"""Pad the first convolution's input channels 3 -> C with zeros (its weights zero there): the same
integers in another kernel shape. Writes the padded file, checks its outputs are identical, times both
round-robin with the runtime's session options (issue 26's try, the model card's "fastest engine" section).

    python scripts/pad_first_conv.py models/digitloc-default-int8.onnx /tmp/pad4.onnx 4
"""
import statistics
import sys
import time
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper as nh


def pad_first_conv(src: str, dst: str, C: int) -> None:
    """Write ``dst``: ``src`` with its first convolution's input padded to ``C`` channels."""
    m = onnx.load(src)
    g = m.graph
    init = {i.name: i for i in g.initializer}
    conv = next(n for n in g.node if n.op_type == "Conv")
    dq_x = next(n for n in g.node if n.output[0] == conv.input[0])
    q_x = next(n for n in g.node if n.output[0] == dq_x.input[0])
    src_t = q_x.input[0]
    wq = init[next(n for n in g.node if n.output[0] == conv.input[1]).input[0]]
    w = nh.to_array(wq)
    w2 = np.zeros((w.shape[0], C, *w.shape[2:]), w.dtype)
    w2[:, :3] = w
    wq.CopyFrom(nh.from_array(w2, wq.name))
    pads = nh.from_array(np.array([0, 0, 0, 0, 0, C - 3, 0, 0], np.int64), "pad4_pads")
    g.initializer.append(pads)
    pad = helper.make_node("Pad", [src_t, "pad4_pads"], ["pad4_out"], name="pad4", mode="constant")
    q_x.input[0] = "pad4_out"
    idx = list(g.node).index(q_x)
    g.node.insert(idx, pad)
    onnx.save(m, dst)


def sess(p: str) -> Any:
    import onnxruntime as ort

    from digitloc.runtime.detector import session_options

    return ort.InferenceSession(p, session_options(), providers=["CPUExecutionProvider"])


def compare(src: str, dst: str, C: int) -> None:
    """Identical outputs? Then images/s of both, round-robin, at batch 1 and 32."""
    a, b = sess(src), sess(dst)
    rng = np.random.default_rng(0)
    for bs in (1, 32):
        x = rng.integers(0, 256, (bs, 64, 128, 3), dtype=np.uint8)
        oa, ob = a.run(None, {"image": x}), b.run(None, {"image": x})
        print("identical", all(np.array_equal(p, q) for p, q in zip(oa, ob, strict=True)))
        r = {"orig": [], f"pad{C}": []}
        for s in (a, b):
            for _ in range(3):
                s.run(None, {"image": x})
        for _ in range(9):
            for k, s in (("orig", a), (f"pad{C}", b)):
                n = max(1, 64 // bs)
                t = time.perf_counter()
                for _ in range(n):
                    s.run(None, {"image": x})
                r[k].append(n * bs / (time.perf_counter() - t))
        print(bs, {k: round(statistics.median(v), 1) for k, v in r.items()})


if __name__ == "__main__":
    pad_first_conv(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    compare(sys.argv[1], sys.argv[2], int(sys.argv[3]))
