"""The VGG19 two-head model: a VGG19 feature extractor, a box head and a class head.

The model takes the runtime contract's input (``image``: uint8 [N, H, W, 3] RGB) and
scales it inside the graph, so an exported model needs no outside normalization. It
returns ``{"bbox": [N, 4] sigmoid x1, y1, x2, y2 relative, "digit": [N, 10] softmax}``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.runtime.contract import (
    BBOX_OUTPUT,
    BOXES_OUTPUT,
    CLASSES_OUTPUT,
    DIGIT_OUTPUT,
    INPUT_NAME,
    NUM_CLASSES,
    SCORES_OUTPUT,
    size_hw,
)

VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))  # (filters, convs) per block
# Keras' VGG19 ImageNet weights expect "caffe" input: BGR, mean-subtracted, 0..255.
# We feed RGB minus the mean and reverse the first conv's input channels instead.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
HEADS = ("dense", "spatial")
CENTRE_OUTPUT = "centre"  # training-only output of the spatial head: centre probability per cell
SPATIAL_STRIDE = 16  # the spatial head reads block 5's convs, before its pool


class ModelError(ValueError):
    """A model option that cannot work, or a weights file that cannot be used."""


@dataclass(frozen=True)
class ModelConfig:
    """Options a device user chooses; saved with the model and into its ONNX metadata."""

    input_size: tuple[int, int] = (64, 64)  # (height, width)
    width: float = 1.0  # width multiplier of the conv blocks (1.0 = VGG19 itself)
    batchnorm: bool = False  # BatchNorm after each conv: for training from scratch
    weights: str | None = None  # None, "imagenet", or a path to a VGG19 notop weights file
    head: str = "dense"  # "dense": the reference's flatten + dense heads; "spatial": per-cell centre/box/class
    box_units: tuple[int, ...] = (256, 128)
    class_units: tuple[int, ...] = (256,)
    dropout: float = 0.5

    def check(self) -> None:
        if min(self.input_size) < 32:
            raise ModelError(f"input size {self.input_size} is below VGG19's minimum of 32")
        if self.head not in HEADS:
            raise ModelError(f"unknown head {self.head!r}: choose one of {', '.join(HEADS)}")
        if self.width <= 0:
            raise ModelError(f"width multiplier must be positive, got {self.width}")
        if self.weights is not None:
            if self.width != 1.0 or self.batchnorm:
                raise ModelError("ImageNet weights exist only for VGG19 itself: width 1.0, no batchnorm")
            if self.weights != "imagenet" and not Path(self.weights).is_file():
                raise ModelError(f"{self.weights}: weights file not found")

    @property
    def pretrained(self) -> bool:
        return self.weights is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        if "input_size" in data:  # older runs saved one side for a square
            data["input_size"] = size_hw(data["input_size"])
        for key in ("box_units", "class_units"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _vgg19_features(x: Any, cfg: ModelConfig, last_pool: bool = True) -> Any:
    """VGG19's 16 convs in 5 blocks, scaled by the width multiplier (layer names as Keras');
    without ``last_pool`` the features stay at stride 16."""
    from keras import layers

    for b, (filters, convs) in enumerate(VGG19_BLOCKS, start=1):
        units = max(8, int(round(filters * cfg.width)))
        for c in range(1, convs + 1):
            name = f"block{b}_conv{c}"
            x = layers.Conv2D(units, 3, padding="same", use_bias=not cfg.batchnorm, name=name,
                              activation=None if cfg.batchnorm else "relu")(x)
            if cfg.batchnorm:
                x = layers.BatchNormalization(name=f"{name}_bn")(x)
                x = layers.ReLU(name=f"{name}_relu")(x)
        if last_pool or b < len(VGG19_BLOCKS):
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return x


def _spatial_head(features: Any, cfg: ModelConfig) -> dict[str, Any]:
    """Centre probability, box and class per stride-16 cell, reduced to one box and one class."""
    from keras import layers

    from digitloc.train.layers import CellBoxes, CellClasses

    units = max(16, int(round(512 * cfg.width)))
    h = layers.Conv2D(units, 3, padding="same", activation="relu", name="head_conv")(features)
    cells = int(features.shape[1]) * int(features.shape[2])
    centre = layers.Softmax(name=CENTRE_OUTPUT)(layers.Reshape((cells,), name="centre_flat")(
        layers.Conv2D(1, 1, name="centre_logits")(h)))
    box = CellBoxes(name=BBOX_OUTPUT)([layers.Conv2D(4, 1, name="cell_box")(h), centre])
    c = layers.Conv2D(units, 3, padding="same", activation="relu", name="class_conv")(h)
    c = layers.Dropout(cfg.dropout * 0.5, name="class_dropout")(c)
    digit = CellClasses(name=DIGIT_OUTPUT)([layers.Conv2D(NUM_CLASSES, 1, name="cell_class")(c), centre])
    return {BBOX_OUTPUT: box, DIGIT_OUTPUT: digit, CENTRE_OUTPUT: centre}


def build_model(cfg: ModelConfig) -> Any:
    """Build the two-head model (Keras functional) for ``cfg``."""
    cfg.check()
    import keras
    from keras import layers

    height, width = cfg.input_size
    image = keras.Input((height, width, 3), dtype="uint8", name=INPUT_NAME)
    if cfg.pretrained:
        # caffe preprocessing inside the graph: subtract the ImageNet mean (RGB order here) ...
        x = layers.Rescaling(1.0, name="to_float")(image)
        x = layers.Normalization(mean=CAFFE_MEAN_RGB, variance=(1.0, 1.0, 1.0), name="caffe_mean")(x)
        try:
            backbone = keras.applications.VGG19(include_top=False, input_shape=(height, width, 3), name="vgg19",
                                                weights="imagenet" if cfg.weights == "imagenet" else cfg.weights)
        except (OSError, ValueError, Exception) as exc:  # download failures surface as several types
            raise ModelError(f"VGG19 weights {cfg.weights!r} could not be loaded: {exc}") from None
        # ... and let the first conv read RGB where the weights were trained on BGR.
        conv = backbone.get_layer("block1_conv1")
        kernel, bias = conv.get_weights()
        conv.set_weights([kernel[:, :, ::-1, :], bias])
        if cfg.head == "spatial":
            backbone = keras.Model(backbone.input, backbone.get_layer("block5_conv4").output, name="vgg19")
        features = backbone(x)
    else:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(image)
        features = _vgg19_features(x, cfg, last_pool=cfg.head == "dense")
    name = "vgg19" if cfg.width == 1.0 else f"vgg19_w{cfg.width:g}"
    if cfg.head == "spatial":
        return keras.Model(image, _spatial_head(features, cfg), name=f"{name}_spatial")
    flat = layers.Flatten(name="flatten")(features)

    b = flat
    for i, units in enumerate(cfg.box_units):
        b = layers.Dense(units, activation="relu", name=f"box_dense{i + 1}")(b)
    bbox = layers.Dense(4, activation="sigmoid", name=BBOX_OUTPUT)(b)

    c = flat
    for i, units in enumerate(cfg.class_units):
        c = layers.Dense(units, activation="relu", name=f"class_dense{i + 1}")(c)
        c = layers.Dropout(cfg.dropout, name=f"class_dropout{i + 1}")(c)
    digit = layers.Dense(NUM_CLASSES, activation="softmax", name=DIGIT_OUTPUT)(c)
    return keras.Model(image, {BBOX_OUTPUT: bbox, DIGIT_OUTPUT: digit}, name=f"{name}_two_head")


def inference_model(model: Any) -> Any:
    """The model with the runtime contract's two outputs only (training-only outputs dropped;
    the layers and weights are shared)."""
    import keras

    outputs = model.output if isinstance(model.output, dict) else {}
    if set(outputs) <= {BBOX_OUTPUT, DIGIT_OUTPUT} or BOXES_OUTPUT in outputs or "maps" in outputs:
        return model  # a one-digit model without extra outputs, or a detector (its outputs are its contract)
    return keras.Model(model.inputs, {k: outputs[k] for k in (BBOX_OUTPUT, DIGIT_OUTPUT)}, name=model.name)


def centre_grid(model: Any) -> tuple[int, int] | None:
    """(rows, columns) of the spatial head's centre cells, or None for a model without one."""
    outputs = model.output if isinstance(model.output, dict) else {}
    if CENTRE_OUTPUT not in outputs:
        return None
    height, width = (int(d) for d in model.inputs[0].shape[1:3])
    return height // SPATIAL_STRIDE, width // SPATIAL_STRIDE


def backbone_layers(model: Any) -> list[Any]:
    """The feature-extractor layers (frozen in phase 1 of pretrained training)."""
    return [layer for layer in model.layers if layer.name == "vgg19" or layer.name.startswith("block")]


def load_model(path: str | os.PathLike[str], training: bool = False) -> Any:
    """Load a saved digitloc model (.keras) with the custom losses and layers it may name; the
    training-only outputs are dropped unless ``training``."""
    import keras

    from digitloc.train import layers, losses  # noqa: F401 - registers the serializable losses and layers

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras model (a .keras file is a zip archive; this one is not)")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ModelError(f"{path}: not a Keras model (a zip archive without config.json)")
    try:  # safe mode: a model file from elsewhere cannot run code (the digitloc losses are registered)
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a foreign or broken archive
        raise ModelError(f"{path}: not a Keras model ({type(exc).__name__}: {exc})") from None
    return model if training else inference_model(model)


def keras_predict(model: Any, images: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and class probabilities of a Keras two-head model (direct calls, no fit machinery)."""
    boxes, probs = [], []
    for start in range(0, len(images), batch_size):
        out = model({INPUT_NAME: images[start:start + batch_size]}, training=False)
        boxes.append(np.asarray(out[BBOX_OUTPUT]))
        probs.append(np.asarray(out[DIGIT_OUTPUT]))
    return np.concatenate(boxes), np.concatenate(probs)


def predict_detections(model: Any, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Run a Keras detector (inference form) over images: boxes, scores, classes."""
    outs: dict[str, list] = {BOXES_OUTPUT: [], SCORES_OUTPUT: [], CLASSES_OUTPUT: []}
    for start in range(0, len(images), batch_size):
        res = model({INPUT_NAME: images[start: start + batch_size]}, training=False)
        for k in outs:
            outs[k].append(np.asarray(res[k]))
    return {k: np.concatenate(v) for k, v in outs.items()}
