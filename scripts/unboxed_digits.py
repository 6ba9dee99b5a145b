"""Digits a detector reads on a detection build's training photos where SVHN boxed none: candidates for real digits
the annotators left unboxed (a neighbour's number at the photo's edge, a second line), written as regions that
``digitloc-data detection --ignore FILE`` makes neither a target nor background (session 22).

    python scripts/unboxed_digits.py models/digitloc-detector-int8.onnx --build data/det192x96-d \\
        -o data/unboxed-s20.json

A digit is kept when its score is at least --min-score and it overlaps every SVHN box of its photo at IoU under
--max-iou (a digit read twice between two close digits overlaps them and is left out). Only the build's training
photos are read: its validation photos keep every pixel as SVHN labels it. The JSON maps each photo's origin
("train/6.png") to its regions, x1, y1, x2, y2 in the photo's pixels, and records how it was made.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click
import numpy as np


def unboxed(pred_boxes: np.ndarray, scores: np.ndarray, true_boxes: np.ndarray, min_score: float,
            max_iou: float) -> np.ndarray:
    """The predicted boxes [n, 4] scored at least ``min_score`` that overlap every true box at IoU under
    ``max_iou``, hold no true box's centre and cover under 0.2 of any true box (an ignored region must not take a
    boxed digit's centre out of the loss)."""
    from digitloc.runtime.contract import box_iou

    pred_boxes = np.asarray(pred_boxes, np.float32).reshape(-1, 4)
    keep = np.asarray(scores, np.float32) >= min_score
    true_boxes = np.asarray(true_boxes, np.float32).reshape(-1, 4)
    if len(true_boxes):
        p, t = pred_boxes[:, None, :], true_boxes[None, :, :]
        keep &= box_iou(p, t).max(axis=1) < max_iou
        cx, cy = (t[..., 0] + t[..., 2]) / 2, (t[..., 1] + t[..., 3]) / 2
        keep &= ~((cx >= p[..., 0]) & (cx <= p[..., 2]) & (cy >= p[..., 1]) & (cy <= p[..., 3])).any(axis=1)
        inter = (np.clip(np.minimum(p[..., 2], t[..., 2]) - np.maximum(p[..., 0], t[..., 0]), 0, None)
                 * np.clip(np.minimum(p[..., 3], t[..., 3]) - np.maximum(p[..., 1], t[..., 1]), 0, None))
        area = np.maximum((t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1]), 1e-6)
        keep &= (inter / area < 0.2).all(axis=1)
    return pred_boxes[keep]


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--build", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A detection build (digitloc-data detection): its training photos are read.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.4, show_default=True)
@click.option("--max-iou", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing file.")
def main(model: Path, build: Path, min_score: float, max_iou: float, output: Path, force: bool) -> None:
    """Write OUTPUT: the digits MODEL reads on BUILD's training photos where SVHN boxed none."""
    from digitloc.annotations.dataset.detection import build_photos
    from digitloc.benchmarks.numbers import read_photos
    from digitloc.runtime.detector import Detector
    from digitloc.runtime.fileio import atomic_write_text, check_writable

    try:
        check_writable(output, force)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    photos = build_photos(build, "training")
    _, detections = read_photos(Detector(model, provider="cpu"), photos)
    regions = {}
    for photo, detection in zip(photos, detections, strict=True):
        boxes = np.array([d.bbox for d in detection.digits], np.float32).reshape(-1, 4)
        scores = np.array([d.confidence for d in detection.digits], np.float32)
        found = unboxed(boxes, scores, photo.boxes, min_score, max_iou)
        if len(found):
            regions[photo.origin] = np.round(found, 1).tolist()
    payload = {"command": f"python {' '.join(shlex.quote(a) for a in sys.argv)}", "model": str(model),
               "build": str(build), "min_score": min_score, "max_iou": max_iou, "photos_read": len(photos),
               "regions": regions}
    atomic_write_text(output, json.dumps(payload, indent=1))
    click.echo(f"{sum(len(v) for v in regions.values())} unboxed digits on {len(regions)} of {len(photos)} "
               f"training photos -> {output}")


if __name__ == "__main__":
    main()
