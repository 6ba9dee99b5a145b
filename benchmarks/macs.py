"""Multiply-accumulates per image, counted from an ONNX graph's Conv and MatMul/Gemm nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def count_macs(path: Path) -> float:
    """MACs for one image: shapes come from ONNX shape inference at batch size 1, with data
    propagation (a detector's neck up-samples by computed sizes: without it every layer after the
    neck has no shape). A convolution or product whose shape stays unknown is an error, not a zero."""
    import onnx

    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0.0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            weight = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
            out = shapes.get(node.output[0])
            if not (weight and out and all(out)):
                raise ValueError(f"{path}: node {node.name} ({node.op_type}) has no known shape to count")
            # weight: [Cout, Cin/group, kH, kW]; out: [N, Cout, H, W]
            total += float(np.prod(out)) * float(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm", "MatMulInteger"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if not (a and b and all(a) and all(b)):
                raise ValueError(f"{path}: node {node.name} ({node.op_type}) has no known shape to count")
            trans_b = any(at.name == "transB" and at.i for at in node.attribute)
            total += float(np.prod(a)) * float(b[0] if trans_b else b[-1])
    return total
