"""The model contract: names, dtypes, metadata keys and box conventions.

One source of truth: training and export import these names from here, so a
model written by one side is read by the other without guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

CONTRACT_VERSION = "1"  # one digit per photo: bbox and digit
DETECTOR_CONTRACT = "2"  # every digit: boxes, scores, classes (and bbox, digit of the best)
CONTRACT_VERSIONS = (CONTRACT_VERSION, DETECTOR_CONTRACT)

INPUT_NAME = "image"  # uint8 [N, H, W, 3] RGB, scaled inside the model
BBOX_OUTPUT = "bbox"  # float32 [N, 4]: x1, y1, x2, y2 relative to the image
DIGIT_OUTPUT = "digit"  # float32 [N, 10]: softmax probabilities, index = digit
# Version 2 (detectors) adds every digit found, top-K by score (K fixed by the model):
BOXES_OUTPUT = "boxes"  # float32 [N, K, 4]: x1, y1, x2, y2 relative to the (letterboxed) input
SCORES_OUTPUT = "scores"  # float32 [N, K]: peak score of each digit, descending
CLASSES_OUTPUT = "classes"  # int32 [N, K]: the digit 0-9

NUM_CLASSES = 10
CLASS_NAMES = tuple(str(d) for d in range(NUM_CLASSES))

# How a photo becomes the model input: the whole photo stretched to HxW (version 1), or fitted
# with its aspect kept and padded grey (letterbox; the detectors).
RESIZE_MODE = "stretch"
LETTERBOX = "letterbox"
RESIZE_MODES = (RESIZE_MODE, LETTERBOX)
INPUT_LAYOUT = "NHWC"
INPUT_DTYPE = "uint8"
COLOR_ORDER = "RGB"
BOX_FORMAT = "xyxy-relative"


# Metadata keys in the ONNX file's metadata_props: everything the runtime needs.
META_CONTRACT = "digitloc.contract_version"
META_INPUT_SIZE = "digitloc.input_size"  # "H,W"
META_INPUT_LAYOUT = "digitloc.input_layout"
META_INPUT_DTYPE = "digitloc.input_dtype"
META_COLOR_ORDER = "digitloc.color_order"
META_RESIZE_MODE = "digitloc.resize_mode"
META_CLASS_NAMES = "digitloc.class_names"  # JSON list
META_BOX_FORMAT = "digitloc.box_format"
META_PRECISION = "digitloc.precision"
META_BACKBONE = "digitloc.backbone"  # JSON of the model config
META_TRAINING = "digitloc.training"  # JSON summary of the training data and run
META_EVALUATION = "digitloc.evaluation"  # JSON figures on real held-out photos
META_EXCLUDED_NODES = "digitloc.quantization_excluded_nodes"  # JSON list
META_MIN_SCORE = "digitloc.min_score"  # detectors: the default score threshold (chosen on training data)
META_TOP_K = "digitloc.top_k"  # detectors: K, the digits the graph returns per photo
META_VERSION = "digitloc.version"
META_EXPORTED_AT = "digitloc.exported_at"
REQUIRED_META = (META_CONTRACT, META_INPUT_SIZE, META_RESIZE_MODE, META_CLASS_NAMES, META_BOX_FORMAT)


class ContractError(ValueError):
    """A model that does not follow the digitloc contract (names, shapes, metadata)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime reads from a model's metadata."""

    input_size: tuple[int, int]  # (height, width)
    class_names: tuple[str, ...]
    precision: str
    metadata: dict[str, str]
    version: str = CONTRACT_VERSION
    resize_mode: str = RESIZE_MODE
    min_score: float | None = None  # detectors: the default threshold their metadata gives

    @property
    def is_detector(self) -> bool:
        return self.version == DETECTOR_CONTRACT


def size_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(height, width) of an input size given as one side (square) or as (height, width)."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def size_text(size: int | tuple[int, int] | list[int]) -> str:
    """An input size the way images are named and ``--size`` reads it: WIDTHxHEIGHT (``128x64``)."""
    h, w = size_hw(size)
    return f"{w}x{h}"


def contract_metadata(input_size: tuple[int, int], precision: str, extra: dict[str, str] | None = None,
                      detector: bool = False) -> dict[str, str]:
    """The metadata_props an exporter writes for a model of this input size and precision; a
    ``detector`` is contract version 2 with letterboxed input."""
    meta = {
        META_CONTRACT: DETECTOR_CONTRACT if detector else CONTRACT_VERSION,
        META_INPUT_SIZE: f"{input_size[0]},{input_size[1]}",
        META_INPUT_LAYOUT: INPUT_LAYOUT,
        META_INPUT_DTYPE: INPUT_DTYPE,
        META_COLOR_ORDER: COLOR_ORDER,
        META_RESIZE_MODE: LETTERBOX if detector else RESIZE_MODE,
        META_CLASS_NAMES: json.dumps(list(CLASS_NAMES)),
        META_BOX_FORMAT: BOX_FORMAT,
        META_PRECISION: precision,
    }
    meta.update(extra or {})
    return meta


def parse_metadata(meta: dict[str, str], source: str) -> ModelInfo:
    """Check and read a model's metadata; a ContractError names what is missing or wrong."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ContractError(f"{source}: not a digitloc model (metadata lacks {', '.join(missing)})")
    if meta[META_CONTRACT] not in CONTRACT_VERSIONS:
        raise ContractError(f"{source}: contract version {meta[META_CONTRACT]}, this runtime reads "
                            f"{' and '.join(CONTRACT_VERSIONS)}")
    if meta[META_RESIZE_MODE] not in RESIZE_MODES or meta[META_BOX_FORMAT] != BOX_FORMAT:
        raise ContractError(f"{source}: resize mode {meta[META_RESIZE_MODE]!r} / box format "
                            f"{meta[META_BOX_FORMAT]!r} not supported")
    try:
        height, width = (int(v) for v in meta[META_INPUT_SIZE].split(","))
        names = tuple(json.loads(meta[META_CLASS_NAMES]))
        min_score = float(meta[META_MIN_SCORE]) if META_MIN_SCORE in meta else None
    except (ValueError, TypeError):
        raise ContractError(f"{source}: malformed input size, class names or score threshold in metadata") from None
    if len(names) != NUM_CLASSES:
        raise ContractError(f"{source}: {len(names)} class names, expected {NUM_CLASSES}")
    return ModelInfo((height, width), names, meta.get(META_PRECISION, "unknown"), dict(meta), meta[META_CONTRACT],
                     meta[META_RESIZE_MODE], min_score)


def order_box(box: np.ndarray) -> np.ndarray:
    """x1 <= x2 and y1 <= y2 for box(es) whose corners a model may have swapped."""
    box = np.asarray(box, dtype=np.float32)
    xs, ys = np.sort(box[..., 0::2], axis=-1), np.sort(box[..., 1::2], axis=-1)
    return np.stack([xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]], axis=-1)


def clip_box(box: np.ndarray, width: float = 1.0, height: float = 1.0) -> np.ndarray:
    """Clip x1, y1, x2, y2 box(es) to [0, width] x [0, height]."""
    box = np.asarray(box, dtype=np.float32).copy()
    box[..., 0::2] = np.clip(box[..., 0::2], 0.0, width)
    box[..., 1::2] = np.clip(box[..., 1::2], 0.0, height)
    return box


def relative_to_pixels(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Relative x1, y1, x2, y2 (0..1) to pixels of an image of the given size."""
    box = np.asarray(box, dtype=np.float32)
    scale = np.array([width, height, width, height], dtype=np.float32)
    return box * scale


def pixels_to_relative(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel x1, y1, x2, y2 to relative (0..1) for an image of the given size."""
    box = np.asarray(box, dtype=np.float32)
    scale = np.array([width, height, width, height], dtype=np.float32)
    return box / scale


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of x1, y1, x2, y2 boxes, element-wise over the leading dimensions."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ix1 = np.maximum(a[..., 0], b[..., 0])
    iy1 = np.maximum(a[..., 1], b[..., 1])
    ix2 = np.minimum(a[..., 2], b[..., 2])
    iy2 = np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
