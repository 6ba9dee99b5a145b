"""Evaluation figures for any model's predictions: class accuracy, IoU, confusion matrix.

Plain numpy on predictions, so the same figures serve Keras models, ONNX variants and
hand-made cases alike.
"""

from __future__ import annotations

import numpy as np

from digitloc.runtime.contract import NUM_CLASSES, box_iou


def evaluate_predictions(true_boxes: np.ndarray, true_labels: np.ndarray, pred_boxes: np.ndarray,
                         probs: np.ndarray, iou_threshold: float = 0.5) -> dict:
    """Class accuracy, per-class accuracy, mean IoU, IoU >= threshold share, both right
    (class right and IoU >= threshold), class accuracy apart for photos whose box was found
    (IoU >= threshold) and missed (most wrong digits come with a missed box), the mean ratio of
    predicted to true box width and height (a biased box head shows here first) and the
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
    sizes = {}
    for name, (lo, hi) in (("width", (0, 2)), ("height", (1, 3))):
        true_size = true_boxes[:, hi] - true_boxes[:, lo]
        ok = true_size > 0
        sizes[name] = float(((pred_boxes[ok, hi] - pred_boxes[ok, lo]) / true_size[ok]).mean()) if ok.any() else None
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


def keras_predict(model: object, images: np.ndarray, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and class probabilities of a Keras two-head model (direct calls, no fit machinery)."""
    from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT

    boxes, probs = [], []
    for start in range(0, len(images), batch_size):
        out = model(images[start:start + batch_size], training=False)
        boxes.append(np.asarray(out[BBOX_OUTPUT]))
        probs.append(np.asarray(out[DIGIT_OUTPUT]))
    return np.concatenate(boxes), np.concatenate(probs)
