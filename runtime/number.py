"""From a detector's top-K digits to the house number: threshold, suppression, reading order.

One function, ``read_digits``, shared by the runtime, the benchmarks and training's threshold
choice, so every figure is measured on the number the user is shown.
"""

from __future__ import annotations

import numpy as np

from digitloc.runtime.contract import box_iou

DEFAULT_MIN_SCORE = 0.3  # used when a model's metadata names none
DEFAULT_NMS_IOU = 0.45  # two digits overlapping more than this are one digit read twice
DEFAULT_MAX_DIGITS = 8
# The digits of one house number stand on one line and are about one size: a digit joins the number of the
# most confident digit only when its height is within LINE_HEIGHT_RATIO of that digit's and its vertical
# centre within LINE_CENTRE_SHARE of that digit's height from its centre. Chosen on the detection build's 238
# validation photos (see the model card): it drops a fanlight's or a plaque's "digit" beside the number.
LINE_HEIGHT_RATIO = 1.6
LINE_CENTRE_SHARE = 0.5
# A detector's digit boxes are widened about their centre by this factor once read: SVHN's test-split boxes (the
# photos users frame) are wider than its train split's at the same pixel height (w/h median of 16-32 px digits
# 0.53-0.58 against 0.452; digitloc-bench misses), and the detector's came out 5.5 % narrower than them on the
# validation photos of svhn-test-sample/fit. Chosen on the detection build's 238 validation photos (session 19, see
# the model card): digit recall 90.57 % -> 91.13 % (x1.1: 90.76 %), the train-split photos' too. 1.0 gives the
# model's own boxes.
DETECTOR_BOX_WIDTH = 1.05
BOX_WIDTH_RANGE = (0.5, 2.0)  # the factors a caller may ask for (the Detector, --box-width, digitloc-bench misses)


def suppress(boxes: np.ndarray, scores: np.ndarray, iou: float = DEFAULT_NMS_IOU) -> np.ndarray:
    """Indices kept by class-agnostic non-maximum suppression, by descending score."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if all(float(box_iou(boxes[i], boxes[j])) <= iou for j in keep):
            keep.append(int(i))
    return np.array(keep, np.int64)


def reading_order(boxes: np.ndarray) -> np.ndarray:
    """Indices of boxes as a person reads them: rows top to bottom, each left to right.

    A box joins a row when its vertical centre lies within the row's vertical extent (the row's
    first box, by height order); a second row starts where none does."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    rows: list[list[int]] = []
    for i in np.argsort(cy, kind="stable"):
        for row in rows:
            top, bottom = boxes[row[0], 1], boxes[row[0], 3]
            if top <= cy[i] <= bottom:
                row.append(int(i))
                break
        else:
            rows.append([int(i)])
    rows.sort(key=lambda r: float(np.mean(cy[r])))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    return np.array([i for row in rows for i in sorted(row, key=lambda k: float(cx[k]))], np.int64)


def on_the_line(boxes: np.ndarray, anchor: int) -> np.ndarray:
    """Per box, whether it stands on the line of box ``anchor`` and is about its size (the
    LINE_* rules above); the anchor itself always does."""
    h = boxes[:, 3] - boxes[:, 1]
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    if not (np.isfinite(h[anchor]) and h[anchor] > 0):  # a degenerate anchor (clipped to nothing) rules out nothing
        return np.ones(len(boxes), bool)
    sized = (h <= LINE_HEIGHT_RATIO * h[anchor]) & (h[anchor] <= LINE_HEIGHT_RATIO * h)
    same = sized & (np.abs(cy - cy[anchor]) <= LINE_CENTRE_SHARE * h[anchor])
    same[anchor] = True
    return same


def widen_boxes(boxes: np.ndarray, factor: float = DETECTOR_BOX_WIDTH) -> np.ndarray:
    """x1, y1, x2, y2 boxes [..., 4] widened about their centres by ``factor`` (heights kept)."""
    boxes = np.asarray(boxes, np.float32)
    if factor == 1.0:
        return boxes
    cx, half = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 2] - boxes[..., 0]) * (factor / 2)
    return np.stack([cx - half, boxes[..., 1], cx + half, boxes[..., 3]], axis=-1).astype(np.float32)


def read_digits(boxes: np.ndarray, scores: np.ndarray, min_score: float = DEFAULT_MIN_SCORE,
                max_digits: int = DEFAULT_MAX_DIGITS, nms_iou: float = DEFAULT_NMS_IOU,
                one_line: bool = True) -> np.ndarray:
    """Indices of the digits of one photo that make its number, in reading order: scores at or
    above ``min_score``, overlapping duplicates suppressed, with ``one_line`` only those on the
    most confident digit's line and of about its size (``on_the_line``), at most ``max_digits``
    (the most confident). ``boxes`` [K, 4], ``scores`` [K]; the classes at these indices are the
    number. ``one_line=False`` reads every row (a number written on two lines)."""
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    candidates = np.flatnonzero(scores >= min_score)
    if len(candidates) == 0 or max_digits < 1:
        return np.zeros(0, np.int64)
    kept = candidates[suppress(boxes[candidates], scores[candidates], nms_iou)]
    if one_line:  # one line: left to right (a slanted line's digits are not split into rows)
        kept = kept[on_the_line(boxes[kept], 0)][:max_digits]
        return kept[np.argsort((boxes[kept, 0] + boxes[kept, 2]) / 2, kind="stable")]
    kept = kept[:max_digits]
    return kept[reading_order(boxes[kept])]

