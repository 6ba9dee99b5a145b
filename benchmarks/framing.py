"""The framing evaluation across variants: Keras, each ONNX file, and each ONNX file through the
runtime's two-pass ``refine``, on the held-out one-digit photos re-framed at each digit height share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.dataset.data import FramedPhoto, framing_dataset
from digitloc.annotations.metrics import evaluate_predictions, value_bins


def detector_predict(path: Path, photos: list[FramedPhoto], refine: bool,
                     batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Relative boxes and probabilities from the runtime's ``Detector`` (one pass or with
    ``refine``) on the native-resolution photos."""
    from digitloc.runtime.detector import Detector

    detector = Detector(path, provider="cpu", refine=refine)
    boxes, probs = [], []
    for start in range(0, len(photos), batch_size):
        chunk = photos[start:start + batch_size]
        for f, d in zip(chunk, detector.predict_batch([f.image for f in chunk]), strict=True):
            h, w = f.image.shape[:2]
            boxes.append(np.asarray(d.bbox) / np.array([w, h, w, h]))
            probs.append(d.probs)
    return np.asarray(boxes, np.float32), np.asarray(probs, np.float32)


def framing_table(keras_path: Path | None, onnx_paths: list[Path], framed: list[FramedPhoto], size: tuple[int, int],
                  refine: bool = True) -> dict[str, Any]:
    """Framing figures (per share) of Keras, of each ONNX variant, and of each with ``refine``."""
    from digitloc.annotations.metrics import framing_figures
    from digitloc.export.parity import onnx_predict

    data, shares = framing_dataset(framed, size)

    def figures(pred: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
        return framing_figures(shares, data.boxes, data.labels, *pred)

    out: dict[str, Any] = {}
    if keras_path is not None:
        from digitloc.train.model import keras_predict, load_model

        out[f"{keras_path.name} (Keras)"] = figures(keras_predict(load_model(keras_path), data.images))
    for path in onnx_paths:
        out[path.name] = figures(onnx_predict(path, data.images))
        if refine:
            out[f"{path.name} + refine"] = figures(detector_predict(path, framed, refine=True))
    return out


def detector_passes(onnx_paths: list[Path], photos: list[FramedPhoto]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Each model through ``Detector`` on photos as they are, one pass and then with ``refine``:
    the row name, relative boxes and probabilities."""
    for path in onnx_paths:
        for refine in (False, True):
            yield (path.name + (" + refine" if refine else ""), *detector_predict(path, photos, refine))


def photo_truth(photos: list[FramedPhoto]) -> tuple[np.ndarray, np.ndarray]:
    """The photos' true boxes (relative to each photo) and digits."""
    true = np.array([f.box / np.array([f.image.shape[1], f.image.shape[0]] * 2) for f in photos])
    return true, np.array([f.digit for f in photos])


def as_is_table(onnx_paths: list[Path], photos: list[FramedPhoto], test: np.ndarray) -> list[dict[str, Any]]:
    """The held-out photos as they are (native resolution, through ``Detector``), one pass and with
    ``refine``: all of them and the untouched test half apart."""

    true, labels = photo_truth(photos)
    rows = []
    for model, boxes, probs in detector_passes(onnx_paths, photos):
        row: dict[str, Any] = {"model": model}
        for name, pick in (("all", np.ones(len(photos), bool)), ("test", test)):
            fig = evaluate_predictions(true[pick], labels[pick], boxes[pick], probs[pick])
            row[name] = {k: fig[k] for k in ("samples", "class_accuracy", "mean_iou", "iou_hit_rate",
                                             "missed_box_side")}
        rows.append(row)
    return rows


def as_is_markdown(rows: list[dict[str, Any]]) -> str:
    head = ("\n| model | held-out photos as they are: acc / IoU | the untouched test half | missed boxes (IoU < 0.5): "
            "left of the digit / right / over it |\n|---|---|---|---|\n")
    return head + "".join(f"| {r['model']} | {r['all']['class_accuracy']:.4f} / {r['all']['mean_iou']:.4f} "
                          f"({r['all']['samples']}) | {r['test']['class_accuracy']:.4f} / {r['test']['mean_iou']:.4f} "
                          f"({r['test']['samples']}) | {_sides(r['all'])} |\n" for r in rows)


def _sides(figures: dict[str, Any]) -> str:
    s = figures.get("missed_box_side")
    return f"{s['left']} / {s['right']} / {s['over']}" if s else ""


def framing_markdown(results: dict[str, Any]) -> str:
    """One row per model: accuracy and mean IoU at each share, overall, and the small-digit gap."""
    shares = [r["share"] for r in next(iter(results.values()))["per_share"]]
    head = ("| model | " + " | ".join(f"{s:.2f}: acc / IoU" for s in shares)
            + " | all: acc / IoU | gap 0.6-0.75 vs 0.2-0.3 (pt) |\n|---|" + "---|" * (len(shares) + 2) + "\n")
    body = ""
    for name, res in results.items():
        cells = " | ".join(f"{r['class_accuracy']:.3f} / {r['mean_iou']:.3f}" for r in res["per_share"])
        gap = res["small_vs_mid_accuracy_gap"]
        body += (f"| {name} | {cells} | {res['class_accuracy']:.3f} / {res['mean_iou']:.3f} "
                 f"| {'' if gap is None else format(100 * gap, '.1f')} |\n")
    constant = " | ".join(f"- / {r['constant_box_iou']:.3f}" for r in next(iter(results.values()))["per_share"])
    return head + body + f"| constant box | {constant} | | |\n"


# Digit height / photo height bins, as real photos were measured (../shared/data/README.md).
SHARE_BINS = (0.0, 0.35, 0.5, 0.65, 0.8, 1.01)


def photos_table(onnx_paths: list[Path], photos: list[FramedPhoto]) -> list[dict[str, Any]]:
    """Each model through ``Detector`` (one pass, then with ``refine``) on photos as they are: the
    overall figures and, per digit height share bin, the photos' share, accuracy, mean IoU and
    the median predicted / true box height."""

    true, labels = photo_truth(photos)
    share_bins = value_bins(np.array([f.share for f in photos]), SHARE_BINS)
    rows = []
    for model, boxes, probs in detector_passes(onnx_paths, photos):
        fig = evaluate_predictions(true, labels, boxes, probs)
        bins = []
        for lo, hi, pick in share_bins:
            entry: dict[str, Any] = {"from": lo, "to": hi, "photos": int(pick.sum()),
                                     "share_of_photos": float(pick.mean())}
            if pick.any():
                f = evaluate_predictions(true[pick], labels[pick], boxes[pick], probs[pick])
                entry.update(class_accuracy=f["class_accuracy"], mean_iou=f["mean_iou"],
                             height_ratio_median=f["box_size_ratio_median"]["height"])
            bins.append(entry)
        rows.append({"model": model, **{k: fig[k] for k in ("samples", "class_accuracy", "mean_iou", "iou_hit_rate",
                                                             "missed_box_side", "per_class_accuracy")},
                     "by_height_share": bins})
    return rows


def photos_markdown(rows: list[dict[str, Any]]) -> str:
    """One row per model: overall accuracy / IoU, then each height share bin (photos in it)."""
    bins = rows[0]["by_height_share"]
    head = ("| model | all: acc / IoU | " + " | ".join(
        f"{b['from']:.2f}-{b['to']:.2f} ({b['photos']})" for b in bins)
        + " | missed boxes left / right / over |\n|---|---|" + "---|" * (len(bins) + 1) + "\n")
    body = ""
    for r in rows:
        cells = " | ".join(f"{b['class_accuracy']:.3f} / {b['mean_iou']:.3f}" if b["photos"] else "-"
                           for b in r["by_height_share"])
        body += (f"| {r['model']} | {r['class_accuracy']:.3f} / {r['mean_iou']:.3f} ({r['samples']}) | {cells} "
                 f"| {_sides(r)} |\n")
    return head + body


def photos_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy and mean IoU per digit height share bin (at its centre), one line per model."""
    from digitloc.annotations.charts import accuracy_iou_chart

    series = {r["model"]: [((b["from"] + b["to"]) / 2, b["class_accuracy"], b["mean_iou"])
                           for b in r["by_height_share"] if b["photos"]] for r in rows}
    return accuracy_iou_chart(series, path, "digit height / photo height (bin centre)", "on the photos as they are")
