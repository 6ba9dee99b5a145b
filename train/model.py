"""The VGG19 two-head model: a VGG19 feature extractor, a box head and a class head.

The model takes the runtime contract's input (``image``: uint8 [N, H, W, 3] RGB) and
scales it inside the graph, so an exported model needs no outside normalization. It
returns ``{"bbox": [N, 4] sigmoid x1, y1, x2, y2 relative, "digit": [N, 10] softmax}``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, INPUT_NAME, NUM_CLASSES, size_hw

VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))  # (filters, convs) per block
# Keras' VGG19 ImageNet weights expect "caffe" input: BGR, mean-subtracted, 0..255.
# We feed RGB minus the mean and reverse the first conv's input channels instead.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


class ModelError(ValueError):
    """A model option that cannot work, or a weights file that cannot be used."""


@dataclass(frozen=True)
class ModelConfig:
    """Options a device user chooses; saved with the model and into its ONNX metadata."""

    input_size: int | tuple[int, int] = 64  # one side (square) or (height, width)
    width: float = 1.0  # width multiplier of the conv blocks (1.0 = VGG19 itself)
    batchnorm: bool = False  # BatchNorm after each conv: for training from scratch
    weights: str | None = None  # None, "imagenet", or a path to a VGG19 notop weights file
    box_units: tuple[int, ...] = (256, 128)
    class_units: tuple[int, ...] = (256,)
    dropout: float = 0.5

    def check(self) -> None:
        if min(size_hw(self.input_size)) < 32:
            raise ModelError(f"input size {self.input_size} is below VGG19's minimum of 32")
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
        if isinstance(data.get("input_size"), list):
            data["input_size"] = tuple(data["input_size"])
        for key in ("box_units", "class_units"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def _vgg19_features(x: Any, cfg: ModelConfig) -> Any:
    """VGG19's 16 convs in 5 blocks, scaled by the width multiplier (layer names as Keras')."""
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
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return x


def build_model(cfg: ModelConfig) -> Any:
    """Build the two-head model (Keras functional) for ``cfg``."""
    cfg.check()
    import keras
    from keras import layers

    height, width = size_hw(cfg.input_size)
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
        features = backbone(x)
    else:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(image)
        features = _vgg19_features(x, cfg)
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
    name = "vgg19_two_head" if cfg.width == 1.0 else f"vgg19_w{cfg.width:g}_two_head"
    return keras.Model(image, {BBOX_OUTPUT: bbox, DIGIT_OUTPUT: digit}, name=name)


def backbone_layers(model: Any) -> list[Any]:
    """The feature-extractor layers (frozen in phase 1 of pretrained training)."""
    return [layer for layer in model.layers if layer.name == "vgg19" or layer.name.startswith("block")]


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load a saved digitloc model (.keras) with the custom losses it may name."""
    import keras

    from digitloc.train import losses  # noqa: F401 - registers the serializable losses

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a Keras model ({exc})") from None
