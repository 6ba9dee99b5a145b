"""Detector: one ONNX Runtime session, everything it needs read from the model's metadata.

Provider choice is explicit: "cuda" fails when CUDA is not really in use (ONNX Runtime
would otherwise log an error and quietly run on the CPU). "auto", the default, takes CUDA when a
session can actually use it; on a CPU with OpenVINO installed too (extra `openvino`), each batch
size runs on whichever of onnxruntime and OpenVINO a short timed probe found faster on this CPU
(``digitloc.runtime.engines``, cached); else onnxruntime. It says which it got. OpenVINO's int8
agrees with fp32 on 99.49 % of 1,569 real photos, onnxruntime's on 99.62 % (the model card).
With ``spin`` (an onnxruntime setting) auto stays on onnxruntime. "fastest" is the same as "auto"
(its name before auto took the probe).
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from digitloc.runtime.contract import (
    BBOX_OUTPUT,
    BOXES_OUTPUT,
    CLASSES_OUTPUT,
    DIGIT_OUTPUT,
    INPUT_NAME,
    SCORES_OUTPUT,
    ContractError,
    ModelInfo,
    clip_box,
    order_box,
    parse_metadata,
    relative_to_pixels,
)
from digitloc.runtime.imageio import DEFAULT_MAX_PIXELS, check_image, read_image_file
from digitloc.runtime.number import (
    BOX_WIDTH_RANGE,
    DEFAULT_MAX_DIGITS,
    DEFAULT_MIN_SCORE,
    DETECTOR_BOX_WIDTH,
    read_digits,
    widen_boxes,
)
from digitloc.runtime.preprocess import letterbox, preprocess, unletterbox_boxes

DEFAULT_MODEL_NAME = "digitloc-default-int8.onnx"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# Served by OpenVINO's own runtime on the same ONNX file (extra `openvino`), not by onnxruntime.
OPENVINO = "openvino"
FASTEST = "fastest"  # the same as "auto" (on a CPU, the faster of onnxruntime and OpenVINO by a timed probe)
PROVIDER_CHOICES = ("auto", *PROVIDERS, OPENVINO, FASTEST)


# The two-pass mode, on by default: chosen on the framing evaluation (see the model card).
DEFAULT_REFINE = True
REFINE_SHARE = 0.8  # the refining window makes the digit this share of its height, as the training photos do
REFINE_BELOW = 0.7  # only photos whose first box is shorter than this share of the photo get the second pass
# A larger photo is read again from a copy shrunk to this many pixels: the window cut for the
# second pass (padded past the edge) then never costs more memory than a photo of this size.
REFINE_MAX_PIXELS = 4_000_000
# Detectors' second pass, chosen on the detection build's validation photos (never trained on; not
# svhn-test-sample/eval): digits read that take less than this share of the photo's height are read
# again from a window in which they take DETECTOR_REFINE_SHARE of its height (see the model card).
DETECTOR_REFINE_BELOW = 0.6
# 0.45 since session 15: on stages 8 and 9, shares 0.425-0.5 read 193-202 of the 238 validation numbers against
# 193 at 0.4 (int8; benchmarks/results/detector/refine-share/, scripts/refine_share_sweep.py).
DETECTOR_REFINE_SHARE = 0.45


def refine_window(box: np.ndarray, size: tuple[int, int], share: float = REFINE_SHARE) -> tuple[int, int, int, int]:
    """A window x1, y1, x2, y2 (pixels, may reach past the photo) centred on a pixel box, of the
    model's aspect, in which the box takes ``share`` of the height (and at most 0.6 of the width)."""
    height, width = size
    x1, y1, x2, y2 = (float(v) for v in box)
    win_h = max((y2 - y1) / share, (x2 - x1) / 0.6 * height / width, 8.0)
    win_w = win_h * width / height
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (int(round(cx - win_w / 2)), int(round(cy - win_h / 2)), int(round(cx + win_w / 2)),
            int(round(cy + win_h / 2)))


def union_box(boxes: np.ndarray) -> np.ndarray:
    """The pixel box x1, y1, x2, y2 around every box of ``boxes`` [n, 4] (n >= 1): what a detector's refine window
    is centred on."""
    return np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()], np.float32)


def clipped_refine_window(box: np.ndarray, shape: tuple[int, ...], size: tuple[int, int],
                          share: float) -> tuple[int, int, int, int]:
    """``refine_window`` cut to a photo of ``shape`` (height, width, ...): the detector's second-pass window."""
    h, w = shape[:2]
    x1, y1, x2, y2 = refine_window(box, size, share)
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)


def crop_window(image: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """The window of an image (it must overlap the image); parts past the photo's edge repeat
    its edge pixels."""
    x1, y1, x2, y2 = window
    h, w = image.shape[:2]
    pad = (max(0, -y1), max(0, y2 - h), max(0, -x1), max(0, x2 - w))
    src = image[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
    return cv2.copyMakeBorder(src, *pad, cv2.BORDER_REPLICATE) if any(pad) else src


def _bounded(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo, or a copy shrunk to ``REFINE_MAX_PIXELS``, and the x, y, x, y scale to it."""
    h, w = image.shape[:2]
    if h * w <= REFINE_MAX_PIXELS:
        return image, np.ones(4, np.float32)
    f = (REFINE_MAX_PIXELS / (h * w)) ** 0.5
    small = cv2.resize(image, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
    sx, sy = small.shape[1] / w, small.shape[0] / h
    return small, np.array([sx, sy, sx, sy], np.float32)


class ProviderError(RuntimeError):
    """The asked-for execution provider cannot be used here."""


@dataclass(frozen=True)
class Digit:
    """One digit read: its class, score and box in pixels of the original photo."""

    digit: int
    confidence: float
    bbox: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"digit": self.digit, "confidence": round(self.confidence, 6), "bbox": [round(v, 2) for v in self.bbox]}


@dataclass(frozen=True)
class Detection:
    """One photo's answer: the house number (every digit read, in reading order) and, for
    one-digit readers, the most confident digit, its probability and box in original pixels."""

    digit: int
    confidence: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
    probs: tuple[float, ...]
    digits: tuple[Digit, ...] = ()  # every digit read, rows top to bottom, each left to right

    @property
    def number(self) -> str:
        """The digits read as a string; "" when none was found."""
        return "".join(str(d.digit) for d in self.digits)

    def to_dict(self, latency_ms: float | None = None, **context: Any) -> dict[str, Any]:
        """The one JSON record of a prediction (``digitloc-run --json`` lines, ``digitloc-serve`` answers):
        ``context`` (where the image came from), ``number`` and ``digits`` (each digit, confidence and
        bbox), the most confident digit's digit, confidence, bbox, probs and, when given,
        ``latency_ms``: milliseconds of the detector's work per image (preprocessing, inference, the
        refining pass if on; not reading or decoding the file), a batch's time divided by its size."""
        record = {**context, "number": self.number, "digits": [d.to_dict() for d in self.digits],
                  "digit": self.digit, "confidence": round(self.confidence, 6),
                  "bbox": [round(v, 2) for v in self.bbox], "probs": [round(p, 6) for p in self.probs]}
        if latency_ms is not None:
            record["latency_ms"] = round(latency_ms, 3)
        return record


def default_model_path() -> Path:
    """The default model shipped in digitloc.models (source checkout or regular install)."""
    path = Path(str(resources.files("digitloc.models") / DEFAULT_MODEL_NAME))
    if not path.is_file():
        raise FileNotFoundError(f"the default model {DEFAULT_MODEL_NAME} is not installed; pass a model path")
    return path


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers (not proof that they work: see Detector)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def session_options(threads: int | None = None, spin: bool = False) -> Any:
    """The runtime's onnxruntime session options. By default intra-op threads do not spin-wait
    between calls: on a CPU shared with other work, spinning threads fight it for the cores. On a
    CPU the detector has to itself, ``spin`` makes small batches faster (the model card's speed
    section measures both)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


def open_session(path: str | os.PathLike[str], provider: str = "cpu", threads: int | None = None,
                 spin: bool = False) -> Any:
    """An onnxruntime session on exactly ``provider`` (cpu or cuda) with the runtime's session
    options, or OpenVINO's onnxruntime-like session (``openvino``; ``spin`` does not apply): the one
    way the project opens a model outside the Detector. A session that falls back to another
    provider (onnxruntime only logs that) is refused."""
    if provider == OPENVINO:
        return _openvino_session(Path(path), threads)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), session_options(threads, spin), providers=[PROVIDERS[provider]])
    if session.get_providers()[0] != PROVIDERS[provider]:
        raise ProviderError(f"{Path(path).name}: {provider} was asked for but the session runs on "
                            f"{session.get_providers()[0]}")
    return session


def _openvino_session(path: Path, threads: int | None) -> Any:
    try:
        from digitloc.runtime.openvino_backend import OpenVINOSession

        return OpenVINOSession(path, threads)
    except ImportError:
        raise ProviderError("OpenVINO was asked for but is not installed (pip install 'digitloc[openvino]')") from None
    except RuntimeError as exc:  # OpenVINO's own errors for unreadable files
        raise ContractError(f"{path}: OpenVINO cannot load it ({exc})") from None


class Detector:
    """Find and read the digit of photos with an exported digitloc ONNX model.

    ``predict`` and ``predict_batch`` may be called from several threads at once: the
    ONNX Runtime session is thread-safe (OpenVINO's, where ``auto`` or ``openvino`` runs on it,
    takes the calls in turn) and the detector holds no other mutable state.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, provider: str = "auto",
                 threads: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, refine: bool = DEFAULT_REFINE,
                 refine_below: float = REFINE_BELOW, spin: bool = False, min_score: float | None = None,
                 max_digits: int = DEFAULT_MAX_DIGITS, one_line: bool = True,
                 refine_share: float = DETECTOR_REFINE_SHARE, box_width: float = DETECTOR_BOX_WIDTH) -> None:
        """``refine`` (one-digit models): a second pass, for photos whose first box is shorter than
        ``refine_below`` of the photo, on a window cut around that box so that the digit takes
        ``REFINE_SHARE`` of its height: small or off-centre digits are read at the size the model
        knows best. Each refined photo costs the model twice. ``spin``: onnxruntime's threads
        spin-wait between calls (faster on a CPU of its own, slower beside other work; see
        ``session_options``). ``min_score`` and ``max_digits`` (detectors): the score a digit needs
        to be read (default: the model's metadata, chosen on training data) and the most digits
        read per photo; ``one_line``: the number is the digits on the most confident digit's line and
        of about its size (``read_digits``), False for numbers written on several lines. ``refine_share``
        (detectors): the share of the second pass's window height that the digits read first take
        (``scripts/refine_share_sweep.py`` measures it per model on validation photos). ``box_width``
        (detectors): the digits' boxes are widened about their centres by this factor once read, toward
        SVHN's box convention (``DETECTOR_BOX_WIDTH``; 1.0: the model's own boxes)."""
        import onnxruntime as ort

        self.refine = refine
        self.refine_below = refine_below
        if not 0.0 < refine_share < 1.0:
            raise ValueError(f"refine_share must be within 0..1 (exclusive), got {refine_share}")
        self.refine_share = refine_share
        if not BOX_WIDTH_RANGE[0] <= box_width <= BOX_WIDTH_RANGE[1]:
            raise ValueError(f"box_width must be within {BOX_WIDTH_RANGE[0]:g}..{BOX_WIDTH_RANGE[1]:g}, got {box_width}")
        self.box_width = box_width
        if min_score is not None and not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be within 0..1, got {min_score}")
        if max_digits < 1:
            raise ValueError(f"max_digits must be at least 1, got {max_digits}")
        self._min_score, self.max_digits, self.one_line = min_score, max_digits, one_line
        if provider not in PROVIDER_CHOICES:
            raise ProviderError(f"unknown provider {provider!r}: choose {', '.join(PROVIDER_CHOICES)}")
        if provider == FASTEST:
            provider = "auto"
        self.model_path = Path(model) if model is not None else default_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: no such model file")
        self.max_pixels = max_pixels
        if provider == OPENVINO:
            self.session = _openvino_session(self.model_path, threads)
            self.info = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.model_path))
            self._check_io()
            return
        options = session_options(threads, spin)
        available = ort.get_available_providers()
        if provider == "cuda" and PROVIDERS["cuda"] not in available:
            raise ProviderError("CUDA was asked for but this onnxruntime has no CUDA provider "
                                "(install digitloc[gpu], i.e. onnxruntime-gpu, in place of onnxruntime)")
        wanted = [PROVIDERS["cpu"]]
        if provider == "cuda" or (provider == "auto" and PROVIDERS["cuda"] in available):
            wanted = [PROVIDERS["cuda"], PROVIDERS["cpu"]]
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=wanted)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ContractError(f"{self.model_path}: not a loadable ONNX model ({exc})") from None
        if provider == "cuda" and self.provider != PROVIDERS["cuda"]:
            raise ProviderError(f"CUDA was asked for but the session runs on {self.provider}: "
                                "no usable GPU, driver or CUDA/cuDNN libraries")
        self.info: ModelInfo = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.model_path))
        self._check_io()
        if provider == "auto" and not spin and self.provider == PROVIDERS["cpu"] and importlib.util.find_spec("openvino"):
            # Two engines can read this model on this CPU: the first batch of each size probes which is faster.
            from digitloc.runtime.engines import ONNXRUNTIME, AutoSession

            session = self.session
            try:
                self.session = AutoSession(self.model_path, self.input_size, {
                    ONNXRUNTIME: lambda: session, OPENVINO: lambda: _openvino_session(self.model_path, threads)},
                    threads=threads)
            except Exception:  # a broken OpenVINO install (or CPU probe): onnxruntime alone, as without it
                self.session = session

    @property
    def provider(self) -> str:
        """What runs the model: an onnxruntime provider, ``OpenVINO-CPU``, or ``auto: ...`` with
        what each batch size was probed to run on."""
        return self.session.get_providers()[0]

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or inputs[INPUT_NAME].type != "tensor(uint8)":
            raise ContractError(f"{self.model_path}: needs a uint8 input named {INPUT_NAME!r}, has {sorted(inputs)}")
        need = {BBOX_OUTPUT, DIGIT_OUTPUT} | ({BOXES_OUTPUT, SCORES_OUTPUT, CLASSES_OUTPUT} if self.is_detector else set())
        if not need <= outputs:
            raise ContractError(f"{self.model_path}: needs outputs {', '.join(sorted(need))}, has {sorted(outputs)}")
        for output in self.session.get_outputs():
            if output.name in (BBOX_OUTPUT, DIGIT_OUTPUT):
                self._check_shape(output.name, output.shape)

    def _check_shape(self, name: str, shape: Any) -> None:
        want = 4 if name == BBOX_OUTPUT else len(self.info.class_names)
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != want):
            raise ContractError(f"{self.model_path}: output {name!r} has shape {list(shape)}, "
                                f"the contract needs [N, {want}]")

    @property
    def input_size(self) -> tuple[int, int]:
        return self.info.input_size

    @property
    def is_detector(self) -> bool:
        """A version-2 model: every digit of the photo, not one."""
        return self.info.is_detector

    @property
    def min_score(self) -> float:
        """The score a digit needs to be read: the caller's, else the model's metadata, else the default."""
        if self._min_score is not None:
            return self._min_score
        return self.info.min_score if self.info.min_score is not None else DEFAULT_MIN_SCORE

    def load(self, image: str | os.PathLike[str] | np.ndarray) -> np.ndarray:
        """A path (read with the pixel limit) or an OpenCV array, as an OpenCV array."""
        if isinstance(image, np.ndarray):
            return check_image(image, "image array", self.max_pixels)
        return read_image_file(image, self.max_pixels)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model outputs for a preprocessed uint8 [N, H, W, 3] RGB batch: relative boxes, probs."""
        boxes, probs = self.session.run([BBOX_OUTPUT, DIGIT_OUTPUT], {INPUT_NAME: batch})
        self._check_shape(BBOX_OUTPUT, np.shape(boxes))
        self._check_shape(DIGIT_OUTPUT, np.shape(probs))
        return np.asarray(boxes, np.float32), np.asarray(probs, np.float32)

    def _pixel_boxes(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """One pass: each image's box in its own pixels, and the class probabilities."""
        boxes, probs = self.run(np.stack([preprocess(im, self.input_size) for im in images]))
        px = [clip_box(relative_to_pixels(order_box(box), im.shape[1], im.shape[0]), im.shape[1], im.shape[0])
              for im, box in zip(images, boxes, strict=True)]
        return px, probs

    def run_detector(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs of a version-2 model for a letterboxed batch: boxes [N, K, 4] relative to the
        input, scores [N, K], classes [N, K], and the best digit's class probabilities [N, 10]."""
        boxes, scores, classes, probs = self.session.run([BOXES_OUTPUT, SCORES_OUTPUT, CLASSES_OUTPUT, DIGIT_OUTPUT],
                                                         {INPUT_NAME: batch})
        boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
        shapes = [list(boxes.shape), list(scores.shape), list(np.shape(classes))]
        if boxes.ndim != 3 or boxes.shape[2] != 4 or shapes[1] != shapes[0][:2] or shapes[2] != shapes[1]:
            raise ContractError(f"{self.model_path}: detector outputs of shapes {shapes}; "
                                "the contract needs [N, K, 4], [N, K], [N, K]")
        return boxes, scores, np.asarray(classes, np.int64), np.asarray(probs, np.float32)

    def _detect_pass(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        """One detector pass: per image its candidates' pixel boxes, scores, classes, best-digit probs,
        and the indices of the digits read (in reading order)."""
        boxes, scores, classes, probs = self.run_detector(np.stack([letterbox(im, self.input_size) for im in images]))
        out = []
        for im, b, s, c, p in zip(images, boxes, scores, classes, probs, strict=True):
            px = unletterbox_boxes(b, im.shape[:2], self.input_size)
            out.append((px, s, c, p, np.asarray(read_digits(px, s, self.min_score, self.max_digits,
                                                                 one_line=self.one_line), np.int64)))
        return out

    def _detect_batch(self, loaded: list[np.ndarray]) -> list[Detection]:
        """Version 2: every digit of each photo, read in order. With ``refine``, a photo whose digits
        read take less than ``DETECTOR_REFINE_BELOW`` of its height is read again from a window around
        them (``refine_share`` of its height, cut from the photo): small digits are read at
        the size the model reads best, and the second reading is kept where it reads any digit."""
        passes = self._detect_pass(loaded)
        todo, crops, offsets = [], [], []
        candidates = enumerate(zip(loaded, passes, strict=True)) if self.refine else iter(())
        for i, (im, (px, _, _, _, order)) in candidates:
            if not len(order):
                continue
            union = union_box(px[order])
            if union[3] - union[1] >= DETECTOR_REFINE_BELOW * im.shape[0]:
                continue
            x1, y1, x2, y2 = clipped_refine_window(union, im.shape, self.input_size, self.refine_share)
            todo.append(i)
            crops.append(im[y1:y2, x1:x2])
            offsets.append(np.array([x1, y1, x1, y1], np.float32))
        if crops:
            for i, (px, s, c, p, order), offset in zip(todo, self._detect_pass(crops), offsets, strict=True):
                if len(order):
                    passes[i] = (px + offset, s, c, p, order)
        out = []
        for im, (px, s, c, p, order) in zip(loaded, passes, strict=True):
            h, w = im.shape[:2]
            px = np.clip(widen_boxes(px, self.box_width), 0, np.array([w, h, w, h], np.float32))
            digits = tuple(Digit(int(c[i]), float(s[i]), tuple(float(v) for v in px[i])) for i in order)
            top = max(order, key=lambda i: s[i]) if len(order) else 0  # none read: the model's best peak
            out.append(Detection(int(c[top]), float(s[top]), tuple(float(v) for v in px[top]),
                                 tuple(float(v) for v in p), digits))
        return out

    def predict_batch(self, images: list[str | os.PathLike[str] | np.ndarray]) -> list[Detection]:
        """Detections for several photos (paths or OpenCV arrays), run as one batch (and, for a
        one-digit model, one more for the photos ``refine`` reads again)."""
        if not images:
            return []
        loaded = [self.load(im) for im in images]
        if self.is_detector:
            return self._detect_batch(loaded)
        boxes, probs = self._pixel_boxes(loaded)
        small = [i for i, (box, im) in enumerate(zip(boxes, loaded, strict=True))
                 if box[3] - box[1] < self.refine_below * im.shape[0]] if self.refine else []
        if small:
            sources = [_bounded(loaded[i]) for i in small]
            windows = [refine_window(boxes[i] * scale, self.input_size) for i, (_, scale) in zip(small, sources,
                                                                                                 strict=True)]
            second, second_probs = self._pixel_boxes([crop_window(src, w) for (src, _), w in zip(sources, windows,
                                                                                                  strict=True)])
            probs = probs.copy()
            for i, box, p, (x1, y1, _, _), (_, scale) in zip(small, second, second_probs, windows, sources, strict=True):
                h, w = loaded[i].shape[:2]
                boxes[i] = clip_box((box + np.array([x1, y1, x1, y1], np.float32)) / scale, w, h)
                probs[i] = p
        out = []
        for box, p in zip(boxes, probs, strict=True):
            digit, bbox = int(np.argmax(p)), tuple(float(v) for v in box)
            out.append(Detection(digit, float(p[digit]), bbox, tuple(float(v) for v in p),
                                 (Digit(digit, float(p[digit]), bbox),)))
        return out

    def predict(self, image: str | os.PathLike[str] | np.ndarray) -> Detection:
        """The detection for one photo (a path, or an OpenCV BGR array)."""
        return self.predict_batch([image])[0]

    def timed_batch(self, images: list[np.ndarray]) -> tuple[list[Detection], float]:
        """predict_batch plus its wall time in milliseconds."""
        start = time.perf_counter()
        result = self.predict_batch(images)
        return result, (time.perf_counter() - start) * 1000.0
