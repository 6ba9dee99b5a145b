"""Evaluation figures for any model's predictions: class accuracy, IoU, agreement between two models,
the framing figures and the constant-box floor.

Plain numpy on predictions, so the same figures serve Keras models, ONNX variants, the runtime and
hand-made cases alike; train, export and benchmarks all score through here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitloc.runtime.contract import NUM_CLASSES, box_iou, order_box

MISS_SHIFT = 0.6  # a missed box whose centre is this many true widths off lies beside the digit
CONFIDENCE_BINS = (0.0, 0.5, 0.7, 0.9, 1.01)


def value_bins(values: np.ndarray, edges: tuple[float, ...]) -> list[tuple[float, float, np.ndarray]]:
    """(from, to, mask) of each bin [edge, next edge) of ``values``; a last edge past 1.0 keeps 1.0
    inside and is shown as 1.0."""
    values = np.asarray(values)
    return [(lo, min(hi, 1.0), (values >= lo) & (values < hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def evaluate_predictions(true_boxes: np.ndarray, true_labels: np.ndarray, pred_boxes: np.ndarray,
                         probs: np.ndarray, iou_threshold: float = 0.5) -> dict:
    """Class accuracy, per-class accuracy, mean IoU, IoU >= threshold share, both right
    (class right and IoU >= threshold), class accuracy apart for photos whose box was found
    (IoU >= threshold) and missed (most wrong digits come with a missed box), the mean and median
    ratio of predicted to true box width and height (a biased box head shows here first), on which
    side of the true box each missed box lies (its centre more than 0.6 of the true width to the
    left or right: another digit of the photo read instead), accuracy by confidence, and the
    confusion matrix (rows true, columns predicted).
    """
    true_labels = np.asarray(true_labels).astype(int)
    if len(true_labels) == 0:
        raise ValueError("nothing to evaluate")
    true_boxes, pred_boxes = np.asarray(true_boxes, np.float64), np.asarray(pred_boxes, np.float64)
    pred = np.asarray(probs).argmax(axis=1)
    ious = box_iou(true_boxes, pred_boxes)
    right = pred == true_labels
    hit = ious >= iou_threshold
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    np.add.at(confusion, (true_labels, pred), 1)
    sizes, medians = {}, {}
    for name, (lo, hi) in (("width", (0, 2)), ("height", (1, 3))):
        true_size = true_boxes[:, hi] - true_boxes[:, lo]
        ok = true_size > 0
        ratio = (pred_boxes[ok, hi] - pred_boxes[ok, lo]) / true_size[ok]
        sizes[name] = float(ratio.mean()) if ok.any() else None
        medians[name] = float(np.median(ratio)) if ok.any() else None  # the mean also grows with noise
    true_w = np.maximum(true_boxes[:, 2] - true_boxes[:, 0], 1e-9)
    shift = ((pred_boxes[:, 0] + pred_boxes[:, 2]) - (true_boxes[:, 0] + true_boxes[:, 2])) / 2 / true_w
    sides = {"left": int((~hit & (shift < -MISS_SHIFT)).sum()), "right": int((~hit & (shift > MISS_SHIFT)).sum())}
    sides["over"] = int((~hit).sum()) - sides["left"] - sides["right"]
    by_confidence = [{"from": lo, "to": hi, "samples": int(pick.sum()),
                      "accuracy": float(right[pick].mean()) if pick.any() else None}
                     for lo, hi, pick in value_bins(np.asarray(probs).max(axis=1), CONFIDENCE_BINS)]
    per_class = {str(d): (float(right[true_labels == d].mean()) if (true_labels == d).any() else None)
                 for d in range(NUM_CLASSES)}
    return {
        "samples": int(len(true_labels)),
        "class_accuracy": float(right.mean()),
        "per_class_accuracy": per_class,
        "per_class_count": {str(d): int((true_labels == d).sum()) for d in range(NUM_CLASSES)},
        "mean_iou": float(ious.mean()),
        "iou_threshold": iou_threshold,
        "iou_hit_rate": float(hit.mean()),
        "both_right": float((right & hit).mean()),
        "accuracy_box_found": float(right[hit].mean()) if hit.any() else None,
        "accuracy_box_missed": float(right[~hit].mean()) if (~hit).any() else None,
        "box_size_ratio": sizes,
        "box_size_ratio_median": medians,
        "missed_box_side": sides,
        "accuracy_by_confidence": by_confidence,
        "confusion_matrix": confusion.tolist(),
    }


def failure_index(true_boxes: np.ndarray, labels: np.ndarray, pred_boxes: np.ndarray, probs: np.ndarray,
                  iou_threshold: float = 0.5) -> np.ndarray:
    """Indices of the samples with a wrong digit or a box under the IoU threshold (the
    complement of ``both_right``)."""
    ious = box_iou(np.asarray(true_boxes, np.float64), np.asarray(pred_boxes, np.float64))
    return np.flatnonzero((np.asarray(probs).argmax(1) != np.asarray(labels)) | (ious < iou_threshold))


def constant_box_baseline(train_boxes: np.ndarray, true_boxes: np.ndarray, iou_threshold: float = 0.5) -> dict:
    """What always predicting the mean training box scores: the floor a box head must beat."""
    mean_box = np.asarray(train_boxes, np.float64).mean(axis=0)
    ious = box_iou(np.asarray(true_boxes, np.float64), np.broadcast_to(mean_box, np.shape(true_boxes)))
    return {"box": [round(float(v), 4) for v in mean_box], "mean_iou": float(ious.mean()),
            "iou_hit_rate": float((ious >= iou_threshold).mean())}


def framing_figures(shares: np.ndarray, true_boxes: np.ndarray, labels: np.ndarray, pred_boxes: np.ndarray,
                    probs: np.ndarray) -> dict:
    """The framing evaluation's figures per digit height share: class accuracy, mean IoU, the
    IoU >= 0.5 share and the mean predicted / true box height, with the constant-box IoU beside
    them (the mean true box of the whole framing set: a box head must beat it at every share)."""
    shares = np.asarray(shares)
    true_boxes, pred_boxes = np.asarray(true_boxes, np.float64), np.asarray(pred_boxes, np.float64)
    mean_box = true_boxes.mean(axis=0)
    rows = []
    for share in np.unique(shares):
        pick = shares == share
        fig = evaluate_predictions(true_boxes[pick], np.asarray(labels)[pick], pred_boxes[pick], np.asarray(probs)[pick])
        constant = box_iou(true_boxes[pick], np.broadcast_to(mean_box, true_boxes[pick].shape))
        rows.append({"share": round(float(share), 3), "samples": fig["samples"], "class_accuracy": fig["class_accuracy"],
                     "mean_iou": fig["mean_iou"], "iou_hit_rate": fig["iou_hit_rate"],
                     "height_ratio": fig["box_size_ratio"]["height"], "constant_box_iou": float(constant.mean())})
    overall = evaluate_predictions(true_boxes, labels, pred_boxes, probs)
    return {"per_share": rows, "class_accuracy": overall["class_accuracy"], "mean_iou": overall["mean_iou"],
            "samples": overall["samples"], "worst_share_iou": min(r["mean_iou"] for r in rows),
            "small_vs_mid_accuracy_gap": _gap(rows)}


def _gap(rows: list[dict]) -> float | None:
    """Accuracy at shares 0.6-0.75 minus accuracy at 0.2-0.3 (the issue's small-digit bar)."""
    small = [r["class_accuracy"] for r in rows if 0.2 <= r["share"] <= 0.3]
    mid = [r["class_accuracy"] for r in rows if 0.6 <= r["share"] <= 0.75]
    return float(np.mean(mid) - np.mean(small)) if small and mid else None


def class_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Share of samples whose most likely digit is the true one."""
    return float((np.asarray(probs).argmax(1) == np.asarray(labels).astype(int)).mean())


def agreement(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """How closely ``candidate`` (boxes, probabilities) follows ``reference`` on the same inputs: per output
    max and mean abs diff, class agreement, and IoU between the two models' boxes."""
    (ref_boxes, ref_probs), (boxes, probs) = reference, candidate
    box_diff = np.abs(ref_boxes.astype(np.float64) - boxes)
    prob_diff = np.abs(ref_probs.astype(np.float64) - probs)
    ious = box_iou(order_box(ref_boxes), order_box(boxes))
    return {
        "samples": int(len(ref_boxes)),
        "bbox_max_abs_diff": float(box_diff.max()),
        "bbox_mean_abs_diff": float(box_diff.mean()),
        "digit_max_abs_diff": float(prob_diff.max()),
        "digit_mean_abs_diff": float(prob_diff.mean()),
        "max_abs_diff": float(max(box_diff.max(), prob_diff.max())),
        "class_agreement": float((ref_probs.argmax(1) == probs.argmax(1)).mean()),
        "box_iou_mean": float(ious.mean()),
        "box_iou_min": float(ious.min()),
    }
