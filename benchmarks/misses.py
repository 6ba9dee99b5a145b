"""Where a detector's misses are, on labelled photos: by the digit's size in pixels, in its boxes, in its scores.

``digitloc-bench misses`` reads each photo through the runtime's ``Detector`` as shipped (refine on) with the
model's own boxes (``box_width=1.0``). Every true digit is then right (a digit read over it at IoU >= 0.5
with its class), misread (read over it at IoU >= 0.5 with another class) or missed. ``analyse`` gives:

- digits by their height in the photo's pixels: right / misread / missed;
- the missed digits: the best IoU any digit read has with them, whether that digit has their class,
  and whether the photo's number is read right anyway (a loose box, not a miss of the number);
- the boxes read against SVHN's (the true digit's best-overlapping digit read, IoU >= 0.1): median
  width and height ratios and width / height, per source folder, and SVHN's own width / height by
  the digit's pixel height (SVHN's train and test splits box differently);
- digit recall with the boxes widened about their centres (clipped to the photo, as the runtime does)
  by each factor asked (the runtime's ``DETECTOR_BOX_WIDTH`` is chosen so, on validation photos only);
- the scores of the digits read that overlap no true digit (IoU < 0.1: added) against those that do.

``loose_sheet`` draws the photos with a missed digit that a digit read overlaps at IoU 0.3-0.5 (SVHN's
boxes green, the boxes read red): is the box read off, or SVHN's box loose? Needs no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 3) if values else float("nan")


def _quartiles(values: list[float]) -> list[float]:
    return [round(float(np.percentile(values, q)), 3) for q in (25, 50)] if values else []


def outcomes(r: Any) -> tuple[np.ndarray, list[tuple[str, int, float]]]:
    """For one PhotoResult: the IoUs [read, true], and per true digit whether it is right, misread or missed
    (as digit recall counts it: one to one at IoU >= 0.5), the digit read nearest it (-1: none) and their IoU."""
    from digitloc.annotations.detmetrics import greedy_match
    from digitloc.runtime.contract import box_iou

    match = greedy_match(r.pred_boxes, r.true_boxes)
    found = {int(j): int(r.pred_classes[i]) for i, j in enumerate(match) if j >= 0}
    ious = (box_iou(r.pred_boxes[:, None, :], r.true_boxes[None, :, :]) if len(r.pred_boxes)
            else np.zeros((0, len(r.true_boxes))))
    out = []
    for j, label in enumerate(r.true_labels):
        best = int(np.argmax(ious[:, j])) if len(ious) else -1
        kind = "right" if found.get(j) == int(label) else "misread" if j in found else "missed"
        out.append((kind, best, float(ious[best, j]) if best >= 0 else 0.0))
    return ious, out


def loose(r: Any) -> bool:
    """Whether a photo has a missed digit that a digit read overlaps at IoU 0.3-0.5 (a loose box, not a miss)."""
    return any(kind == "missed" and 0.3 <= iou < 0.5 for kind, _, iou in outcomes(r)[1])


def boxed_photo(image: np.ndarray, true_boxes: np.ndarray, read_boxes: np.ndarray, height: int) -> np.ndarray:
    """The photo scaled to ``height`` with the true boxes (green) and the digits read (red), one pixel wide."""
    import cv2

    f = height / image.shape[0]
    out = cv2.resize(image, (max(8, round(image.shape[1] * f)), height), interpolation=cv2.INTER_CUBIC)
    for boxes, colour in ((true_boxes, (0, 200, 0)), (read_boxes, (0, 0, 255))):
        for x1, y1, x2, y2 in np.asarray(boxes, np.float32).reshape(-1, 4) * f:
            cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), colour, 1)
    return out


def analyse(photos: list, results: list, detections: list, widths: list[float]) -> dict:
    """The figures the module docstring lists, from the runtime's reading of the photos."""
    from digitloc.annotations.detmetrics import PIXEL_EDGES, PhotoResult, detection_figures, pixel_bin
    from digitloc.runtime.number import widen_boxes

    digits, missed, ratios, added, matched, shapes = [], [], {}, [], [], {}
    for p, r, d in zip(photos, results, detections, strict=True):
        ious, per_digit = outcomes(r)
        source = p.origin.split("/")[0]
        for t, label, (kind, best, best_iou) in zip(r.true_boxes, r.true_labels, per_digit, strict=True):
            h = float(t[3] - t[1])
            digits.append((h, kind))
            shapes.setdefault(source, []).append((h, float((t[2] - t[0]) / h)))
            if kind == "missed":
                missed.append({"iou": best_iou, "class_right": best >= 0 and int(r.pred_classes[best]) == int(label),
                               "number_right": r.number == r.true_number})
            if best_iou >= 0.1:
                b = r.pred_boxes[best]
                ratios.setdefault(source, []).append(((b[2] - b[0]) / (t[2] - t[0]), (b[3] - b[1]) / h,
                                                      (b[2] - b[0]) / (b[3] - b[1]), (t[2] - t[0]) / h))
        for i, x in enumerate(d.digits):
            (matched if len(ious) and ious[i].max(initial=0) >= 0.1 else added).append(x.confidence)
    edges = list(zip(PIXEL_EDGES[:-1], PIXEL_EDGES[1:], strict=True))
    by_px = []
    for lo, hi in edges:
        kinds = [k for h, k in digits if lo <= h < hi]
        if kinds:
            by_px.append({"pixels": pixel_bin(lo, hi), "digits": len(kinds),
                          **{k: round(kinds.count(k) / len(kinds), 3) for k in ("right", "misread", "missed")}})
    # SVHN's own boxes: width / height by the digit's pixel height, per source folder (the splits box differently)
    true_shape = {s: {pixel_bin(lo, hi): {"digits": len(v), "w_over_h": _median(v)} for lo, hi in edges
                      if (v := [r for h, r in rows if lo <= h < hi])} for s, rows in sorted(shapes.items())}
    iou_bins = {"under 0.1": 0, "0.1-0.3": 0, "0.3-0.5": 0}
    for m in missed:
        iou_bins["under 0.1" if m["iou"] < 0.1 else "0.1-0.3" if m["iou"] < 0.3 else "0.3-0.5"] += 1
    overlapping = [m for m in missed if m["iou"] >= 0.1]
    boxes = {s: {"digits": len(v), "width_ratio": _median([x[0] for x in v]), "height_ratio": _median([x[1] for x in v]),
                 "read_w_over_h": _median([x[2] for x in v]), "true_w_over_h": _median([x[3] for x in v])}
             for s, v in sorted(ratios.items())}
    recall: dict[str, dict[str, float]] = {}
    sources = sorted({p.origin.split("/")[0] for p in photos})
    for f in widths:  # widened and clipped to the photo, as the runtime does
        wide = [PhotoResult(np.clip(widen_boxes(r.pred_boxes, f), 0, np.array([w, h, w, h], np.float32)),
                            r.pred_classes, r.true_boxes, r.true_labels, r.share, r.origin)
                for r, (h, w) in zip(results, (p.image.shape[:2] for p in photos), strict=True)]
        recall[f"{f:g}"] = {"all": round(detection_figures(wide)["digit_recall"], 4)}
        if len(sources) > 1:
            recall[f"{f:g}"].update({s: round(detection_figures([r for r in wide if r.origin.split("/")[0] == s])
                                              ["digit_recall"], 4) for s in sources})
    lost = {"digits": len(missed), "best_iou": iou_bins,
            "overlapping_with_their_class": sum(m["class_right"] for m in overlapping),
            "overlapping_in_a_number_read_right": sum(m["number_right"] for m in overlapping)}
    return {"by_pixels": by_px, "missed": lost,
            "boxes_by_source": boxes, "true_w_over_h_by_pixels": true_shape, "recall_by_width": recall,
            "scores": {"matched": len(matched), "added": len(added), "matched_p25_p50": _quartiles(matched),
                       "added_p25_p50": _quartiles(added)}}


def loose_sheet(photos: list, results: list, path: Path, count: int = 24) -> int:
    """A PNG of up to ``count`` photos with a missed digit that a digit read overlaps at IoU 0.3-0.5: SVHN's
    boxes green, the boxes read red (is the box read off, or SVHN's box loose?). Returns how many it shows."""
    import cv2

    from digitloc.runtime.fileio import atomic_write_bytes

    tiles = []
    for p, r in zip(photos, results, strict=True):
        if not loose(r):
            continue
        im = boxed_photo(p.image, r.true_boxes, r.pred_boxes, 120)
        tile = np.full((124, 304, 3), 255, np.uint8)
        tile[2:122, 2:2 + min(300, im.shape[1])] = im[:, :300]
        tiles.append(tile)
        if len(tiles) == count:
            break
    if tiles:
        tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % 4)
        sheet = np.vstack([np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)])
        ok, png = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if ok:
            atomic_write_bytes(path, png.tobytes())
    return len(tiles)


def misses_markdown(a: dict) -> str:
    """The tables of ``analyse``'s figures (``cpu_lines`` goes above them)."""
    lines = ["Read as shipped (refine on), the model's own boxes (box width 1).", "",
             "Digits by their height in the photo's pixels:", "",
             "| pixels | digits | right | misread | missed |", "|---|---|---|---|---|"]
    lines += [f"| {b['pixels']} | {b['digits']} | {b['right']:.3f} | {b['misread']:.3f} | {b['missed']:.3f} |"
              for b in a["by_pixels"]]
    m = a["missed"]
    lines += ["", f"Missed digits: {m['digits']}; the best IoU a digit read has with them: "
              + ", ".join(f"{k}: {v}" for k, v in m["best_iou"].items())
              + f". Of those overlapping (IoU >= 0.1), {m['overlapping_with_their_class']} are read with their class "
              f"and {m['overlapping_in_a_number_read_right']} lie in a number read right.", "",
              "Boxes read against SVHN's (median ratios; per source folder):", "",
              "| source | digits | width read / true | height read / true | w/h read | w/h true |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {b['digits']} | {b['width_ratio']} | {b['height_ratio']} | {b['read_w_over_h']} | "
              f"{b['true_w_over_h']} |" for s, b in a["boxes_by_source"].items()]
    bins = list(dict.fromkeys(k for v in a["true_w_over_h_by_pixels"].values() for k in v))
    lines += ["", "SVHN's boxes, width / height (median) by the digit's height in pixels, per source folder:", "",
              "| source | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
    lines += [f"| {s} | " + " | ".join(f"{v[b]['w_over_h']} ({v[b]['digits']})" if b in v else "-" for b in bins) + " |"
              for s, v in a["true_w_over_h_by_pixels"].items()]
    lines += ["", "Digit recall with the boxes widened by (clipped to the photo; per source folder where several):", ""]
    lines += [f"- x{k}: " + ", ".join(f"{s} {v:.4f}" for s, v in r.items()) for k, r in a["recall_by_width"].items()]
    lines += ["", f"Scores (p25 / p50) of the {a['scores']['matched']} digits read over a true digit: "
              f"{a['scores']['matched_p25_p50']}; of the {a['scores']['added']} over none: {a['scores']['added_p25_p50']}."]
    return "\n".join(lines) + "\n"
