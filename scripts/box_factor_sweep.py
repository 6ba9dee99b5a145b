"""Digit recall and box IoU of a detector's digits scaled about their centres by a width and a height factor,
on the photo groups a box convention is chosen from (session 22, models/det192x96-s22-tried/):

- ``fit-trained`` / ``fit-val``: svhn-test-sample/fit's photos that the build's samples were composed from / that
  it keeps for validation (SVHN's test split: its annotators' boxes, the convention of eval and of the
  real one-digit test photos);
- ``train-val``: the build's validation photos of the train split;
- ``one-digit``: the train sample's held-out one-digit photos (issue 23's one-digit figures: the most
  confident digit's accuracy and mean IoU).

    python scripts/box_factor_sweep.py models/digitloc-detector-int8.onnx --build data/det192x96-d \\
        --train-sample ../shared/data/svhn-train-sample/train -o bench/box-factors.json

Each photo is read once (refine on, boxes unwidened) and the factors applied after the number is read: no
number changes. --measure FOLDER adds a folder's photos as one more group (a test split only after a choice).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import numpy as np


def scaled(boxes: Any, width: float, height: float, size: tuple[int, int]) -> np.ndarray:
    """x1, y1, x2, y2 pixel boxes scaled about their centres, clipped to a photo of ``size`` (h, w)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) * width / 2, (b[:, 3] - b[:, 1]) * height / 2
    h, w = size
    return np.clip(np.stack([cx - hw, cy - hh, cx + hw, cy + hh], -1), 0, np.array([w, h, w, h], np.float32))


def _factors(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give factors as numbers separated by commas") from None
    if not values or not all(0.5 <= v <= 2.0 for v in values):
        raise click.BadParameter(f"{text!r}: every factor must be within 0.5..2")
    return values


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--build", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A detection build (digitloc-data detection) with svhn-test-sample/fit among its folders.")
@click.option("--train-sample", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The train sample folder whose held-out one-digit photos make the one-digit group.")
@click.option("--widths", default="1,1.05,1.1,1.15,1.2,1.25,1.3", show_default=True)
@click.option("--heights", default="1,1.05,1.1,1.15,1.2", show_default=True)
@click.option("--measure", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A labelled SVHN folder read as one more group (repeatable).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing file.")
def main(model: Path, build: Path, train_sample: Path, widths: str, heights: str, measure: tuple[Path, ...],
         output: Path, force: bool) -> None:
    """Read the groups once with MODEL; recall and IoU per width and height factor; one line per pair."""
    from digitloc.annotations.dataset.data import held_out_photos
    from digitloc.annotations.dataset.detection import build_photos
    from digitloc.annotations.detmetrics import detection_figures
    from digitloc.benchmarks.numbers import labelled_photos, read_photos
    from digitloc.runtime.detector import Detector
    from digitloc.runtime.fileio import atomic_write_text, check_writable
    from digitloc.runtime.number import box_iou

    try:
        check_writable(output, force)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    ws, hs = _factors(widths), _factors(heights)
    val, trained = build_photos(build, "validation"), build_photos(build, "training")
    held = {p.origin for p in held_out_photos([str(train_sample)], ("val", "test"))}
    groups = {"fit-trained": [p for p in trained if p.origin.startswith("fit/")],
              "fit-val": [p for p in val if p.origin.startswith("fit/")],
              "train-val": [p for p in val if not p.origin.startswith("fit/")],
              "one-digit": [p for p in labelled_photos([str(train_sample)]) if p.origin in held]}
    groups.update({folder.name: labelled_photos([str(folder)]) for folder in measure})
    detector = Detector(model, provider="cpu", box_width=1.0)
    read = {name: (photos, *read_photos(detector, photos)) for name, photos in groups.items() if photos}
    table: dict[str, Any] = {"model": str(model), "photos": {k: len(v[0]) for k, v in read.items()}, "pairs": {}}
    for width in ws:
        for height in hs:
            row = {}
            for name, (photos, results, detections) in read.items():
                moved = [dataclasses.replace(r, pred_boxes=scaled(r.pred_boxes, width, height, p.image.shape[:2]))
                         for p, r in zip(photos, results, strict=True)]
                figures = detection_figures(moved)
                row[name] = {"recall": figures["digit_recall"], "matched_iou": figures["matched_iou"]}
                if name == "one-digit":
                    ious = [float(box_iou(scaled(d.bbox, width, height, p.image.shape[:2])[0], p.boxes[0]))
                            if d.digits else 0.0 for p, d in zip(photos, detections, strict=True)]
                    row[name]["top_iou"] = float(np.mean(ious))
            table["pairs"][f"{width:g} {height:g}"] = row
            click.echo(f"{width:g} {height:g} " + " ".join(
                f"{n} {v['recall']:.4f}" + (f"/{v['top_iou']:.4f}" if "top_iou" in v else "") for n, v in row.items()))
    atomic_write_text(output, json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
