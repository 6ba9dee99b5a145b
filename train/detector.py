"""The VGG19 digit detector: VGG19 conv blocks, an FPN-style neck to stride 4, and two spatial
heads (a class-aware centre heatmap and a box head), decoded inside the graph.

Training model: ``image`` -> ``maps`` [N, H/4, W/4, 14] (10 heatmap logits, 4 box side logits).
Inference model (what is exported): ``boxes`` [N, K, 4] relative x1, y1, x2, y2, ``scores``
[N, K], ``classes`` [N, K] (int32), and for one-digit readers ``bbox`` [N, 4] and ``digit``
[N, 10] of the most confident digit. Peaks are picked class-agnostically (a 3x3 max-pool of the
per-cell best class), so one place yields one digit.

Heatmap and box targets follow CenterNet (focal loss on Gaussian peaks) and TTFNet (box sides
regressed at every cell of the Gaussian's core, GIoU loss weighted by the Gaussian), which
converges fast: this model trains on 2 CPU cores.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from digitloc.annotations.dataset.detection import IGNORE_LABEL
from digitloc.runtime.contract import (
    BOXES_OUTPUT,
    INPUT_NAME,
    NUM_CLASSES,
)
from digitloc.train.int8grid import DETECTOR_FLOAT, INT8_WEIGHT_LEVELS, snap_to_grid
from digitloc.train.layers import SIDE_SCALE, STRIDE
from digitloc.train.model import VGG19_BLOCKS, ModelError

MAPS_OUTPUT = "maps"
GAUSS_ALPHA = 0.54  # TTFNet: Gaussian sigma = alpha * side / 6
REG_CORE = 0.3  # box sides are regressed where the Gaussian is above this
BOX_WEIGHT = 5.0
IGNORE_HEAT = 0.999  # an ignored cell's heat: (1 - 0.999) ** 4 = 1e-12 of the background loss


@dataclass(frozen=True)
class DetectorConfig:
    """Options of the detector; saved with the run and into the ONNX metadata."""

    input_size: tuple[int, int] = (96, 192)  # (height, width), multiples of 16
    width: float = 0.25
    batchnorm: bool = True
    neck: int = 64
    head: int = 48
    top_k: int = 16
    # 2: block 1's first convolution strides by 2 and block 1 is not pooled, so block 1 runs at a quarter
    # of the pixels (the full-resolution layers are the slowest int8 convolutions); the maps keep stride 4.
    stem_stride: int = 1
    # One 3x3 convolution feeds both heads' outputs (instead of one per head): the heads run in float.
    shared_head: bool = False

    def check(self) -> None:
        h, w = self.input_size
        if h % 16 or w % 16 or min(h, w) < 32:
            raise ModelError(f"detector input {w}x{h}: both sides must be multiples of 16, at least 32")
        if self.width <= 0 or self.top_k < 1:
            raise ModelError("width must be positive and top_k at least 1")
        if self.stem_stride not in (1, 2):
            raise ModelError(f"stem stride {self.stem_stride}: 1 or 2")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = "detector"
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["input_size"] = tuple(data.get("input_size", (96, 192)))
        return cls(**data)


def _conv(x: Any, units: int, name: str, batchnorm: bool, kernel: int = 3, strides: int = 1) -> Any:
    from keras import layers

    x = layers.Conv2D(units, kernel, strides=strides, padding="same", use_bias=not batchnorm, name=name,
                      activation=None if batchnorm else "relu")(x)
    if batchnorm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def build_detector(cfg: DetectorConfig) -> Any:
    """The training model: ``image`` uint8 [N, H, W, 3] -> ``maps`` [N, H/4, W/4, 14]."""
    cfg.check()
    import keras
    from keras import layers

    h, w = cfg.input_size
    image = keras.Input((h, w, 3), dtype="uint8", name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(image)
    taps = {}
    for b, (filters, convs) in enumerate(VGG19_BLOCKS, start=1):
        units = max(8, int(round(filters * cfg.width)))
        for c in range(1, convs + 1):
            stride = cfg.stem_stride if (b, c) == (1, 1) else 1
            x = _conv(x, units, f"block{b}_conv{c}", cfg.batchnorm, strides=stride)
        taps[b] = x
        if b < len(VGG19_BLOCKS) and not (b == 1 and cfg.stem_stride == 2):
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    # taps: block 3 at stride 4, block 4 at stride 8, block 5 at stride 16.
    p = layers.Conv2D(cfg.neck, 1, name="neck_c5")(taps[5])
    for b in (4, 3):
        p = layers.UpSampling2D(2, interpolation="nearest", name=f"neck_up{b}")(p)
        p = layers.Add(name=f"neck_add{b}")([p, layers.Conv2D(cfg.neck, 1, name=f"neck_c{b}")(taps[b])])
    p = _conv(p, cfg.neck, "neck_conv", cfg.batchnorm)
    if cfg.shared_head:
        heat = box = layers.Conv2D(cfg.head, 3, padding="same", activation="relu", name="head_conv")(p)
    else:
        heat = layers.Conv2D(cfg.head, 3, padding="same", activation="relu", name="heat_conv")(p)
        box = layers.Conv2D(cfg.head, 3, padding="same", activation="relu", name="box_conv")(p)
    heat = layers.Conv2D(NUM_CLASSES, 1, name="heat_logits",
                         bias_initializer=keras.initializers.Constant(-2.19))(heat)  # prior 0.1
    box = layers.Conv2D(4, 1, name="box_logits")(box)
    maps = layers.Concatenate(name=MAPS_OUTPUT)([heat, box])
    name = f"vgg19_w{cfg.width:g}_detector"
    return keras.Model(image, {MAPS_OUTPUT: maps}, name=name)


def inference_detector(model: Any, cfg: DetectorConfig) -> Any:
    """The exported form: the training model's maps decoded to the contract's outputs."""
    import keras

    from digitloc.train.layers import DecodeDetections

    decode = DecodeDetections(cfg.input_size, cfg.top_k, name="decode")
    out = decode(model.output[MAPS_OUTPUT] if isinstance(model.output, dict) else model.output)
    # One named layer per output: the ONNX outputs take the contract's names from them.
    return keras.Model(model.inputs, {k: keras.layers.Identity(name=k)(v) for k, v in out.items()}, name=model.name)


def activation_steps(model: Any, images: np.ndarray, percentile: float = 99.999) -> dict[str, float]:
    """One int8 step (the calibrated range / 255, as percentile calibration sets it) of every ReLU
    output of the backbone and neck (``*_relu`` layers: the tensors the int8 file rounds)."""
    import keras

    relus = [layer for layer in model.layers if layer.name.endswith("_relu")]
    probe = keras.Model(model.inputs, [layer.output for layer in relus])
    outs = [[] for _ in relus]
    for start in range(0, len(images), 64):
        for k, out in enumerate(probe(images[start:start + 64], training=False)):
            outs[k].append(np.asarray(out).ravel())
    return {layer.name: max(float(np.percentile(np.concatenate(o), percentile)) / 255.0, 1e-6)
            for layer, o in zip(relus, outs, strict=True)}


def with_activation_noise(model: Any, steps: dict[str, float], scale: float, seed: int = 0) -> Any:
    """``model`` with an ActivationNoise layer after each ReLU named in ``steps``; the layers (and
    so the weights) are ``model``'s own, so training one trains the other."""
    import keras

    from digitloc.train.layers import ActivationNoise

    def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **kwargs)
        if layer.name in steps:
            out = ActivationNoise(steps[layer.name], scale, seed=seed + zlib.crc32(layer.name.encode()) % 100003,
                                  name=f"{layer.name}_noise")(out)
        return out

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)


def training_form(model: Any) -> Any:
    """A saved detector in either form as the training model (``image`` -> ``maps``)."""
    import keras

    if isinstance(model.output, dict) and MAPS_OUTPUT in model.output:
        return model
    return keras.Model(model.inputs, {MAPS_OUTPUT: model.get_layer(MAPS_OUTPUT).output}, name=model.name)


def is_detector(model: Any) -> bool:
    """Whether a Keras model is a detector (training or inference form)."""
    outputs = model.output if isinstance(model.output, dict) else {}
    return MAPS_OUTPUT in outputs or BOXES_OUTPUT in outputs


# -- targets and loss ---------------------------------------------------------------------------

def int8_convolutions(model: Any) -> list[Any]:
    """The convolutions the int8 export quantizes: those with a BatchNorm after them (tf2onnx folds it in
    and renames them), and those whose name has no ``DETECTOR_FLOAT`` part."""
    from keras import layers

    names = {layer.name for layer in model.layers}
    return [layer for layer in model.layers if isinstance(layer, layers.Conv2D)
            and (f"{layer.name}_bn" in names or not any(part in layer.name for part in DETECTOR_FLOAT))]


def snap_to_int8_grid(model: Any, levels: int = INT8_WEIGHT_LEVELS) -> list[str]:
    """Move the kernel of every convolution the int8 export quantizes onto the grid it quantizes it to
    (``snap_to_grid``, per output channel). The BatchNorm folded in later scales each channel, and the grid
    with it, so the fp32 file exported afterwards holds the weights the int8 file holds, and the two differ
    by int8's activations alone. Changes ``model`` in place; returns the convolutions' names."""
    names = []
    for conv in int8_convolutions(model):
        conv.kernel.assign(snap_to_grid(conv.kernel.numpy(), axis=-1, levels=levels))
        names.append(conv.name)
    return names


def encode_targets(boxes: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Targets of a batch: [N, H/4, W/4, 15] = 10 heatmaps, the box (x1, y1, x2, y2, input pixels)
    to regress at each cell, and that cell's box-loss weight. ``boxes`` [N, M, 4] relative,
    ``labels`` [N, M] (-1 = no digit). A box labelled IGNORE_LABEL (a real digit its annotators left unboxed)
    sets every heatmap to IGNORE_HEAT at the cells whose centres lie in it: not a peak (under 1), and the focal
    loss's background term, weighted by (1 - heat) ** 4, is about nothing there."""
    h, w = size
    gh, gw = h // STRIDE, w // STRIDE
    out = np.zeros((len(boxes), gh, gw, NUM_CLASSES + 5), np.float32)
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    scale = np.array([w, h, w, h], np.float32)
    centres = cell_centres(size)
    cx, cy = centres[..., 0], centres[..., 1]
    for n in range(len(boxes)):
        for x1, y1, x2, y2 in boxes[n][labels[n] == IGNORE_LABEL] * scale:
            out[n, (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2), :NUM_CLASSES] = IGNORE_HEAT
        valid = labels[n] >= 0
        px = boxes[n][valid] * scale
        lab = labels[n][valid].astype(int)
        order = np.argsort(-(px[:, 2] - px[:, 0]) * (px[:, 3] - px[:, 1]))  # small boxes win shared cells
        for k in order:
            x1, y1, x2, y2 = px[k]
            bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            ci, cj = min(int(cx), gw - 1), min(int(cy), gh - 1)
            sx = max(GAUSS_ALPHA * bw / 6 / STRIDE, 0.4)
            sy = max(GAUSS_ALPHA * bh / 6 / STRIDE, 0.4)
            g = np.exp(-((xs - ci) ** 2 / (2 * sx * sx) + (ys - cj) ** 2 / (2 * sy * sy)))
            g[cj, ci] = 1.0
            out[n, :, :, lab[k]] = np.maximum(out[n, :, :, lab[k]], g)
            core = g > REG_CORE
            weight = g * core * np.log(bw * bh + 1.0) / max(g[core].sum(), 1e-6)
            out[n, core, NUM_CLASSES: NUM_CLASSES + 4] = px[k]
            out[n, core, NUM_CLASSES + 4] = weight[core]
    return out


def cell_centres(size: tuple[int, int]) -> np.ndarray:
    """[H/4, W/4, 2] pixel centres (x, y) of the map cells."""
    h, w = size
    ys, xs = np.mgrid[0: h // STRIDE, 0: w // STRIDE].astype(np.float32)
    return np.stack([(xs + 0.5) * STRIDE, (ys + 0.5) * STRIDE], axis=-1)


def detection_loss(size: tuple[int, int]) -> Any:
    """Focal loss on the heatmaps (CenterNet) plus weighted GIoU on the regressed boxes (TTFNet).
    Written in ``keras.ops``, so a stage trains under any Keras backend (JAX on a GPU machine)."""
    from keras import ops

    centres = cell_centres(size)

    def loss(y_true: Any, y_pred: Any) -> Any:
        gt = y_true[..., :NUM_CLASSES]
        p = ops.clip(ops.sigmoid(y_pred[..., :NUM_CLASSES]), 1e-4, 1 - 1e-4)
        pos = ops.cast(gt >= 1.0, "float32")
        pos_loss = -ops.log(p) * (1 - p) ** 2 * pos
        neg_loss = -ops.log(1 - p) * p ** 2 * (1 - gt) ** 4 * (1 - pos)
        focal = (ops.sum(pos_loss) + ops.sum(neg_loss)) / ops.maximum(ops.sum(pos), 1.0)

        sides = ops.exp(ops.clip(y_pred[..., NUM_CLASSES:], -4.0, 4.0)) * SIDE_SCALE
        pred = ops.concatenate([centres - sides[..., :2], centres + sides[..., 2:]], axis=-1)
        true = y_true[..., NUM_CLASSES: NUM_CLASSES + 4]
        weight = y_true[..., NUM_CLASSES + 4]
        ix1, iy1 = ops.maximum(pred[..., 0], true[..., 0]), ops.maximum(pred[..., 1], true[..., 1])
        ix2, iy2 = ops.minimum(pred[..., 2], true[..., 2]), ops.minimum(pred[..., 3], true[..., 3])
        inter = ops.maximum(ix2 - ix1, 0) * ops.maximum(iy2 - iy1, 0)
        area_p = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
        area_t = (true[..., 2] - true[..., 0]) * (true[..., 3] - true[..., 1])
        union = area_p + area_t - inter + 1e-6
        ex1, ey1 = ops.minimum(pred[..., 0], true[..., 0]), ops.minimum(pred[..., 1], true[..., 1])
        ex2, ey2 = ops.maximum(pred[..., 2], true[..., 2]), ops.maximum(pred[..., 3], true[..., 3])
        enclose = (ex2 - ex1) * (ey2 - ey1) + 1e-6
        giou = inter / union - (enclose - union) / enclose
        box = ops.sum((1 - giou) * weight) / (ops.sum(weight) + 1e-4)
        return focal + BOX_WEIGHT * box

    return loss


def transfer_backbone(model: Any, source_path: str | os.PathLike[str]) -> int:
    """Copy the conv blocks (``block*`` layers, matched by name and shape) of a saved digitloc
    model into ``model``; returns how many layers were copied."""
    from digitloc.train.model import load_model

    source = load_model(source_path)
    copied, _, other_shape = copy_layers(model, source, lambda name: name.startswith("block"))
    if other_shape:
        raise ModelError(f"{source_path}: layer {other_shape[0]} has another shape; the widths differ")
    if not copied:
        raise ModelError(f"{source_path}: no conv block to take (not a VGG19 digitloc model)")
    return len(copied)


def copy_layers(model: Any, source: Any, chosen: Callable[[str], bool] = lambda name: True,
                aliases: dict[str, str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """Copy into ``model``'s ``chosen`` layers with weights the weights of ``source``'s layer of the
    same name (else of its name in ``aliases``) where the shapes agree: the one copy loop of
    transfer_backbone and transfer_layers. Returns the layers copied, those with no source layer
    and those whose source has another shape."""
    by_name = {layer.name: layer for layer in source.layers}
    copied: list[str] = []
    missing: list[str] = []
    other_shape: list[str] = []
    for layer in model.layers:
        if not layer.weights or not chosen(layer.name):
            continue
        src = by_name.get(layer.name) or by_name.get((aliases or {}).get(layer.name, ""))
        if src is None:
            missing.append(layer.name)
            continue
        weights = src.get_weights()
        if [w.shape for w in weights] != [w.shape for w in layer.get_weights()]:
            other_shape.append(layer.name)
            continue
        layer.set_weights(weights)
        copied.append(layer.name)
    return copied, missing, other_shape


def design_of(model: Any) -> tuple[int, bool]:
    """A built or saved detector's design: its stem stride and whether one convolution feeds both heads."""
    stride = model.get_layer("block1_conv1").strides[0]
    return int(stride), any(layer.name == "head_conv" for layer in model.layers)


def check_design(model: Any, cfg: DetectorConfig, source: str) -> None:
    """Refuse to continue a saved detector under options that name another design (the run record
    would say one design and the weights be another's)."""
    def words(stride: int, shared: bool) -> str:
        return f"stem stride {stride} and {'a shared head conv' if shared else 'two head convs'}"

    saved, asked = design_of(model), (cfg.stem_stride, cfg.shared_head)
    if saved != asked:
        raise ModelError(f"{source}: a detector of {words(*saved)}; the options ask for {words(*asked)} "
                         "(--init-layers starts a changed design from it)")


# A layer of a changed design that starts from another layer of the saved detector.
LAYER_SOURCES = {"head_conv": "heat_conv"}


def transfer_layers(model: Any, source_path: str | os.PathLike[str]) -> list[str]:
    """Start every layer of ``model`` from the saved detector's layer of the same name and shape
    (``head_conv`` from ``heat_conv``): a run continued into a changed design (another stem stride,
    a shared head). Returns the layers left as built, which must be few."""
    from digitloc.train.model import load_model

    source = load_model(source_path, training=True)
    if not is_detector(source):
        raise ModelError(f"{source_path}: not a digitloc detector")
    copied, missing, other_shape = copy_layers(model, source, aliases=LAYER_SOURCES)
    if not copied:
        raise ModelError(f"{source_path}: no layer of this design to take (another width?)")
    return missing + other_shape
