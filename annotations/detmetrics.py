"""Detection metrics: digit recall and precision, AP@0.5 per class, whole-number accuracy.

Inputs are per photo: the digits read (boxes, classes in reading order, as ``runtime.number``
gives them) and every candidate with its score (for AP), against the true boxes and labels in
annotation order (SVHN writes a number's digits in reading order). Boxes in one frame per photo
(pixels or relative, the same for both sides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from digitloc.runtime.contract import BOXES_OUTPUT, CLASSES_OUTPUT, NUM_CLASSES, SCORES_OUTPUT, box_iou
from digitloc.runtime.number import DETECTOR_BOX_WIDTH, read_digits, widen_boxes

IOU_THRESHOLD = 0.5
LOOSE_IOU = 0.1  # a digit read over a true digit it misses (IoU under 0.5) but overlaps: a loose box
# Digit recall is also counted at this IoU: what separates digits not found from digits found with a box drawn
# otherwise than the annotator's (SVHN's test-split boxes are often looser than the glyph).
LENIENT_IOU = 0.3
SHARE_EDGES = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.01)  # digit height / photo height bins
# The tallest digit's height in the photo's own pixels (the photo's size where the digit is): what the reader had.
PIXEL_EDGES = (0.0, 16.0, 24.0, 32.0, 48.0, float("inf"))
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.1, 0.71, 0.05))  # score thresholds tried


@dataclass
class PhotoResult:
    """What was read on one photo and what is true there."""

    pred_boxes: np.ndarray  # [n, 4] the digits read, in reading order
    pred_classes: np.ndarray  # [n]
    true_boxes: np.ndarray  # [m, 4] in annotation (reading) order
    true_labels: np.ndarray  # [m]
    share: float = 0.0  # the tallest true digit's height / the photo's height
    origin: str = ""
    digit_px: float = 0.0  # the tallest true digit's height in the photo's pixels (0: not known, e.g. letterboxed)

    @property
    def number(self) -> str:
        return "".join(str(int(c)) for c in self.pred_classes)

    @property
    def true_number(self) -> str:
        return "".join(str(int(c)) for c in self.true_labels)


def greedy_match(pred_boxes: np.ndarray, true_boxes: np.ndarray, iou: float = IOU_THRESHOLD) -> np.ndarray:
    """For each prediction (taken in the given order) the index of the truth it matches, or -1;
    each truth is matched at most once, to the free one of highest IoU at or above ``iou``."""
    out = np.full(len(pred_boxes), -1, np.int64)
    if len(pred_boxes) == 0 or len(true_boxes) == 0:
        return out
    ious = box_iou(np.asarray(pred_boxes)[:, None, :], np.asarray(true_boxes)[None, :, :])
    taken = np.zeros(len(true_boxes), bool)
    for i in range(len(pred_boxes)):
        row = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(row))
        if row[j] >= iou:
            out[i], taken[j] = j, True
    return out


def truths_unmatched(result: PhotoResult, iou: float = IOU_THRESHOLD) -> int:
    """How many of a photo's true digits no digit read matches at ``iou`` (``greedy_match``)."""
    return len(result.true_boxes) - int((greedy_match(result.pred_boxes, result.true_boxes, iou) >= 0).sum())


def overall_figures(results: list[PhotoResult]) -> dict[str, float]:
    """Number accuracy, digit recall / precision (right class at IoU >= 0.5), matched box IoU, and digit
    recall at ``LENIENT_IOU``."""
    right_digits = lenient = read = true = 0
    ious: list[float] = []
    numbers = 0
    for r in results:
        match = greedy_match(r.pred_boxes, r.true_boxes)
        for i, j in enumerate(match):
            if j >= 0:
                ious.append(float(box_iou(r.pred_boxes[i], r.true_boxes[j])))
                right_digits += int(r.pred_classes[i] == r.true_labels[j])
        lenient += sum(int(r.pred_classes[i] == r.true_labels[j])
                       for i, j in enumerate(greedy_match(r.pred_boxes, r.true_boxes, LENIENT_IOU)) if j >= 0)
        read += len(r.pred_boxes)
        true += len(r.true_boxes)
        numbers += int(r.number == r.true_number)
    n = max(len(results), 1)
    return {"photos": len(results), "number_accuracy": numbers / n,
            "digit_recall": right_digits / max(true, 1), "digit_precision": right_digits / max(read, 1),
            "matched_iou": float(np.mean(ious)) if ious else 0.0, "digits_true": true, "digits_read": read,
            "digit_recall_lenient": lenient / max(true, 1)}


def average_precision(scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]], results: list[PhotoResult],
                      iou: float = IOU_THRESHOLD) -> dict[str, float]:
    """AP at ``iou`` per class (all-points interpolation) from every candidate's score.
    ``scored`` per photo: (boxes [K, 4], scores [K], classes [K])."""
    aps = {}
    for c in range(NUM_CLASSES):
        hits: list[tuple[float, int]] = []
        total = 0
        for (boxes, scores, classes), r in zip(scored, results, strict=True):
            truth = r.true_boxes[r.true_labels == c]
            total += len(truth)
            sel = np.flatnonzero(classes == c)
            sel = sel[np.argsort(-scores[sel], kind="stable")]
            match = greedy_match(boxes[sel], truth, iou)
            hits.extend((float(scores[i]), int(m >= 0)) for i, m in zip(sel, match, strict=True))
        if total == 0:
            continue
        hits.sort(key=lambda t: -t[0])
        tp = np.cumsum([h for _, h in hits]) if hits else np.zeros(0)
        recall = tp / total if hits else np.zeros(0)
        precision = tp / np.arange(1, len(hits) + 1) if hits else np.zeros(0)
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if hits else np.zeros(0)
        prev = np.concatenate([[0.0], recall[:-1]]) if hits else np.zeros(0)
        aps[str(c)] = float(np.sum((recall - prev) * envelope))
    return aps


def pixel_bin(lo: float, hi: float) -> str:
    """A PIXEL_EDGES bin's name: "16-24 px", "48+ px"."""
    return f"{lo:.0f}+ px" if hi == float("inf") else f"{lo:.0f}-{hi:.0f} px"


def detection_figures(results: list[PhotoResult], scored: list | None = None) -> dict:
    """All figures: overall, by the tallest digit's height share, by its height in the photo's pixels
    (``by_pixels``, where every result knows it), and AP@0.5 per class."""
    shares = np.array([r.share for r in results], np.float32)
    bins = []
    for lo, hi in zip(SHARE_EDGES[:-1], SHARE_EDGES[1:], strict=True):
        sel = [r for r, s in zip(results, shares, strict=True) if lo <= s < hi]
        if sel:
            bins.append({"share": f"{lo:.2f}-{min(hi, 1.0):.2f}", **overall_figures(sel)})
    out = {**overall_figures(results), "by_share": bins}
    if results and all(r.digit_px > 0 for r in results):
        out["by_pixels"] = [{"pixels": pixel_bin(lo, hi), **overall_figures(sel)}
                            for lo, hi in zip(PIXEL_EDGES[:-1], PIXEL_EDGES[1:], strict=True)
                            if (sel := [r for r in results if lo <= r.digit_px < hi])]
    if scored is not None:
        aps = average_precision(scored, results)
        out["ap50"] = aps
        out["map50"] = float(np.mean(list(aps.values()))) if aps else 0.0
    return out


def error_breakdown(results: list[PhotoResult], iou: float = IOU_THRESHOLD) -> dict[str, Any]:
    """Where the wrong numbers go wrong (photos whose number is read right are left out). Per digit:
    a true digit whose box was read with another class (``misread``); a digit read over a true one
    with IoU under ``iou`` but at least ``LOOSE_IOU`` (``loose``, the box drawn off); a true digit
    nothing read overlaps (``missed``); a digit read where none is (``extra``). Per wrong photo, each
    kind it shows (a photo can show several), and ``order`` for a photo whose digits are all found
    and right but read in another order. Apart: ``loose_in_right_numbers``, the true digits of numbers read
    right that no box matches at ``iou`` (drawn otherwise than the annotator's box, not missed)."""
    kinds = ("missed", "misread", "loose", "extra")
    digits = dict.fromkeys(kinds, 0)
    photos = dict.fromkeys((*kinds, "order"), 0)
    wrong = loose_right = 0
    for r in results:
        if r.number == r.true_number:  # a right number with a loose box is right: not an error here
            loose_right += truths_unmatched(r, iou)
            continue
        match = greedy_match(r.pred_boxes, r.true_boxes, iou)
        free_pred, free_true = np.flatnonzero(match < 0), np.setdiff1d(np.arange(len(r.true_boxes)), match)
        loose = greedy_match(r.pred_boxes[free_pred], r.true_boxes[free_true], LOOSE_IOU)
        n_loose = int((loose >= 0).sum())
        found = {"misread": int(sum(r.pred_classes[i] != r.true_labels[j] for i, j in enumerate(match) if j >= 0)),
                 "loose": n_loose, "missed": len(free_true) - n_loose, "extra": len(free_pred) - n_loose}
        wrong += 1
        for k, v in found.items():
            digits[k] += v
            photos[k] += int(v > 0)
        photos["order"] += int(not any(found.values()))
    return {"wrong_numbers": wrong, "digits": digits, "photos_with": photos, "loose_in_right_numbers": loose_right}


def one_digit_figures(results: list[PhotoResult]) -> dict:
    """One-digit photos, each PhotoResult holding the one digit a reader answers (its first): accuracy
    (that digit right) and the mean IoU of its box (0 where it gave none)."""
    right = 0
    ious = []
    for r in results:
        if len(r.pred_boxes):
            ious.append(float(box_iou(r.pred_boxes[0], r.true_boxes[0])))
            right += int(r.pred_classes[0] == r.true_labels[0])
        else:
            ious.append(0.0)
    n = max(len(results), 1)
    return {"photos": len(results), "accuracy": right / n, "mean_iou": float(np.mean(ious)) if ious else 0.0}


def read_photo(det: dict[str, np.ndarray], n: int, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """The digits photo ``n`` of a batch of detector outputs reads at ``min_score``: their boxes (widened
    by ``DETECTOR_BOX_WIDTH`` as the runtime widens them; clipped to the letterboxed input, where the runtime
    clips to the photo, so a box at the photo's edge may reach into the padding here) and classes, in
    reading order."""
    order = read_digits(det[BOXES_OUTPUT][n], det[SCORES_OUTPUT][n], min_score)
    return np.clip(widen_boxes(det[BOXES_OUTPUT][n][order], DETECTOR_BOX_WIDTH), 0.0, 1.0), det[CLASSES_OUTPUT][n][order]


def photo_results(det: dict[str, np.ndarray], boxes: np.ndarray, labels: np.ndarray, min_score: float,
                  shares: np.ndarray | None = None) -> list[PhotoResult]:
    """PhotoResults of letterboxed inputs (relative boxes both sides) at one threshold."""
    out = []
    for n in range(len(boxes)):
        valid = labels[n] >= 0
        tb = boxes[n][valid]
        share = float(shares[n]) if shares is not None else float((tb[:, 3] - tb[:, 1]).max(initial=0))
        out.append(PhotoResult(*read_photo(det, n, min_score), tb, labels[n][valid].astype(int), share))
    return out


def choose_threshold(det: dict[str, np.ndarray], boxes: np.ndarray, labels: np.ndarray,
                     shares: np.ndarray | None = None) -> tuple[float, list[dict[str, Any]]]:
    """The score threshold with the best whole-number accuracy on these (validation) photos."""
    rows = []
    for t in THRESHOLDS:
        fig = detection_figures(photo_results(det, boxes, labels, t, shares))
        rows.append({"min_score": t, **{k: fig[k] for k in ("number_accuracy", "digit_recall", "digit_precision")}})
    best = max(rows, key=lambda r: (r["number_accuracy"], r["digit_recall"]))
    return float(best["min_score"]), rows
