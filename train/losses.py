"""Box losses: MSE (the reference's) and GIoU, registered so saved models reload."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

EPS = 1e-7


@keras.saving.register_keras_serializable(package="digitloc")
def giou_loss(y_true: Any, y_pred: Any) -> Any:
    """1 - generalized IoU of x1, y1, x2, y2 boxes; finite for degenerate or inverted boxes."""
    t_x1, t_y1, t_x2, t_y2 = (y_true[..., i] for i in range(4))
    p_x1 = ops.minimum(y_pred[..., 0], y_pred[..., 2])
    p_x2 = ops.maximum(y_pred[..., 0], y_pred[..., 2])
    p_y1 = ops.minimum(y_pred[..., 1], y_pred[..., 3])
    p_y2 = ops.maximum(y_pred[..., 1], y_pred[..., 3])
    area_t = ops.maximum(t_x2 - t_x1, 0.0) * ops.maximum(t_y2 - t_y1, 0.0)
    area_p = (p_x2 - p_x1) * (p_y2 - p_y1)
    inter = ops.maximum(ops.minimum(t_x2, p_x2) - ops.maximum(t_x1, p_x1), 0.0) * \
        ops.maximum(ops.minimum(t_y2, p_y2) - ops.maximum(t_y1, p_y1), 0.0)
    union = area_t + area_p - inter
    iou = inter / (union + EPS)
    hull = (ops.maximum(t_x2, p_x2) - ops.minimum(t_x1, p_x1)) * (ops.maximum(t_y2, p_y2) - ops.minimum(t_y1, p_y1))
    return 1.0 - iou + (hull - union) / (hull + EPS)


@keras.saving.register_keras_serializable(package="digitloc")
def mse_giou_loss(y_true: Any, y_pred: Any) -> Any:
    """MSE plus GIoU: MSE pulls every corner, GIoU weighs what IoU measures."""
    return 10.0 * ops.mean(ops.square(y_true - y_pred), axis=-1) + giou_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="digitloc")
def mse_loss(y_true: Any, y_pred: Any) -> Any:
    return ops.mean(ops.square(y_true - y_pred), axis=-1)


BOX_LOSSES = {"mse": mse_loss, "giou": giou_loss, "mse+giou": mse_giou_loss}


@keras.saving.register_keras_serializable(package="digitloc")
class MeanIoU(keras.metrics.Mean):
    """Mean IoU between predicted and true boxes (the box head's headline figure)."""

    def __init__(self, name: str = "iou", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        return super().update_state(box_iou(y_true, y_pred), sample_weight)


def box_iou(y_true: Any, y_pred: Any) -> Any:
    """Plain IoU of x1, y1, x2, y2 boxes (0 for empty or inverted ones)."""
    iw = ops.maximum(ops.minimum(y_true[..., 2], y_pred[..., 2]) - ops.maximum(y_true[..., 0], y_pred[..., 0]), 0.0)
    ih = ops.maximum(ops.minimum(y_true[..., 3], y_pred[..., 3]) - ops.maximum(y_true[..., 1], y_pred[..., 1]), 0.0)
    area_t = ops.maximum(y_true[..., 2] - y_true[..., 0], 0.0) * ops.maximum(y_true[..., 3] - y_true[..., 1], 0.0)
    area_p = ops.maximum(y_pred[..., 2] - y_pred[..., 0], 0.0) * ops.maximum(y_pred[..., 3] - y_pred[..., 1], 0.0)
    inter = iw * ih
    return inter / (area_t + area_p - inter + EPS)
