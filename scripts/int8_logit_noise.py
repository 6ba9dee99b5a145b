"""How far int8 moves a detector's heat logits from its fp32 file, and how much of that the weights alone make.

For each FP32,INT8 pair: the spread (std) of the int8 minus fp32 best-class heat logit at the cells where fp32
scores over ``--min-score`` (where a digit is or nearly is), and of every heat logit; with ``--weights-only``, the
same for the fp32 file with its convolution weights rounded as the int8 export rounds them (per output channel,
-64..64 steps: reduce_range) and everything else float. Photos: a detection build's validation photos. A pair
exported from a ``digitloc-train snap-weights`` run holds the same weights in both files: its spread is the
activations' alone.

    python scripts/int8_logit_noise.py s10-fp32.onnx,s10-int8.onnx s14-fp32.onnx,s14-int8.onnx \
        --data data/det192x96-d --weights-only
"""

from __future__ import annotations

from typing import Any

import click
import numpy as np


def heat_maps(model: Any, images: np.ndarray) -> np.ndarray:
    """The ``maps`` tensor (NHWC: 10 heat logits, 4 box logits) of an ONNX detector, exposed as an output."""
    import onnx
    import onnxruntime as ort

    name = next(n for n in model.graph.node if n.op_type == "Concat" and "maps" in n.name.lower()).output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    out = np.concatenate([session.run([name], {feed: images[i:i + 64]})[0] for i in range(0, len(images), 64)])
    return out.transpose(0, 2, 3, 1) if out.shape[1] == 14 else out


def spread(reference: np.ndarray, other: np.ndarray, min_score: float) -> dict[str, float]:
    """Std of the best-class heat logit's move at cells scoring over ``min_score``, and of every heat logit's."""
    ref, oth = reference[..., :10], other[..., :10]
    cells = 1 / (1 + np.exp(-ref.max(-1))) > min_score
    return {"cells": int(cells.sum()), "best_logit_std": float((oth.max(-1) - ref.max(-1))[cells].std()),
            "heat_std": float((oth - ref).std())}


def rounded_weights(model: Any) -> int:
    """Round ``model``'s quantized convolutions' weights in place onto the int8 export's grid (per output
    channel, -64..64 steps of the largest magnitude: onnxruntime's symmetric int8 with reduce_range, the
    grid ``digitloc-train snap-weights`` puts a model on); returns how many."""
    from onnx import numpy_helper

    from digitloc.export.detector import float_nodes
    from digitloc.train.int8grid import snap_to_grid

    kept = set(float_nodes(model))  # the nodes the int8 export keeps in float
    inits = {i.name: i for i in model.graph.initializer}
    count = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in kept or node.input[1] not in inits:
            continue
        grid = snap_to_grid(numpy_helper.to_array(inits[node.input[1]]), axis=0)  # ONNX: output channels first
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(grid, node.input[1]))
        count += 1
    return count


@click.command()
@click.argument("pairs", nargs=-1, required=True)
@click.option("--data", required=True, type=click.Path(file_okay=False, exists=True), help="Detection build.")
@click.option("--min-score", default=0.15, show_default=True)
@click.option("--weights-only", is_flag=True, help="Also the fp32 file with only its weights rounded.")
def main(pairs: tuple[str, ...], data: str, min_score: float, weights_only: bool) -> None:
    """Print, per FP32,INT8 pair, how far int8 moves the heat logits (and the rounded weights alone)."""
    import onnx

    from digitloc.annotations.dataset.detection import load_detection

    images = load_detection(f"{data}/val.npz")["images"]
    for pair in pairs:
        fp32, int8 = pair.split(",")
        reference = heat_maps(onnx.load(fp32), images)
        row = spread(reference, heat_maps(onnx.load(int8), images), min_score)
        text = (f"{int8} against {fp32}: best heat logit at {row['cells']} cells over {min_score:g}: std "
                f"{row['best_logit_std']:.4f}; every heat logit: std {row['heat_std']:.4f}")
        if weights_only:
            model = onnx.load(fp32)
            count = rounded_weights(model)
            w = spread(reference, heat_maps(model, images), min_score)
            text += (f"; weights alone ({count} convolutions on the int8 grid): {w['best_logit_std']:.4f} / "
                     f"{w['heat_std']:.4f}")
        click.echo(text)


if __name__ == "__main__":
    main()
