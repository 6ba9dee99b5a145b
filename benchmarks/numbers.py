"""House numbers read through the runtime on labelled photos as they are (any SVHN-format folder).

Every photo goes through ``Detector`` exactly as a user's would; the number read (its digits
left to right) is compared with the true number as an exact string, each digit read with the
true digits (right class at IoU >= 0.5), by the tallest digit's height share of the photo.
One-digit photos also get the one-digit figures (the most confident digit's class and box, and
whether the number read is that digit alone). Needs no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.detmetrics import (
    PhotoResult,
    detection_figures,
    error_breakdown,
    one_digit_figures,
    overall_figures,
)
from digitloc.runtime.number import DETECTOR_BOX_WIDTH

RESULT_KEYS = ("photos", "number_accuracy", "digit_recall", "digit_precision", "matched_iou")


def labelled_photos(folders: list[str], skip_held_out: bool = False) -> list[Any]:
    """Every readable photo of the folders with all its digits (``DetPhoto``)."""
    from digitloc.annotations.dataset.detection import load_photos

    return load_photos(folders, skip_held_out=skip_held_out)


def read_photos(detector: Any, photos: list[Any], batch_size: int = 32) -> tuple[list[PhotoResult], list[Any]]:
    """Each photo through the runtime's ``Detector`` as given (as shipped: with its refine pass):
    the PhotoResults (pixel boxes) and the Detections."""
    results, detections = [], []
    for start in range(0, len(photos), batch_size):
        chunk = photos[start: start + batch_size]
        for p, d in zip(chunk, detector.predict_batch([p.image for p in chunk]), strict=True):
            boxes = np.array([x.bbox for x in d.digits], np.float32).reshape(-1, 4)
            classes = np.array([x.digit for x in d.digits], np.int64)
            tallest = float((p.boxes[:, 3] - p.boxes[:, 1]).max())
            results.append(PhotoResult(boxes, classes, p.boxes, p.labels, tallest / p.image.shape[0], p.origin,
                                       max(tallest, 1e-3)))
            detections.append(d)
    return results, detections


def reading_summary(detector: Any, photos: list[Any]) -> dict[str, Any]:
    """One reading of a sweep (a rule, a variant, a value): the photos through ``detector``, and the numbers
    read right, digit recall / precision and the wrong numbers' digits by kind."""
    results, _ = read_photos(detector, photos)
    figures, errors = detection_figures(results), error_breakdown(results)
    return {"right": sum(r.number == r.true_number for r in results), "photos": len(results),
            "recall": figures["digit_recall"], "precision": figures["digit_precision"], "digits": errors["digits"]}


def summary_line(summary: dict[str, Any]) -> str:
    """A reading_summary as one line: right, photos, recall, precision, digits by kind."""
    return (f"{summary['right']} {summary['photos']} {summary['recall']:.4f} {summary['precision']:.4f} "
            f"{summary['digits']}")


def numbers_table(onnx_paths: list[Path], photos: list[Any], min_score: float | None = None,
                  provider: str = "cpu", one_line: bool = True,
                  box_width: float = DETECTOR_BOX_WIDTH) -> tuple[list[dict[str, Any]], list[Any]]:
    """One row per model (a detector: with and without its refine pass): whole-number accuracy, digit
    recall / precision, matched IoU, by height share; on the one-digit photos among them, the
    one-digit figures; what ran it (``provider`` as the Detector takes it); and, after the first model,
    the share of photos whose number it reads as the first model does (same refine setting, where the
    first model has it, and a model of the same kind): an int8 file's agreement with its fp32 file, on
    this engine. Also the first model's Detections with refine, photo by photo (for failure_sheet)."""
    from digitloc.runtime.detector import Detector

    rows = []
    first: dict[bool, list[str]] = {}
    first_kind = False
    shown: list[Any] = []
    for path in onnx_paths:
        detector = Detector(path, provider=provider, min_score=min_score, one_line=one_line, box_width=box_width)
        # A detector also one pass alone (--no-refine), so that what its second pass adds is seen.
        for refine in ((False, True) if detector.is_detector else (True,)):
            detector.refine = refine
            results, detections = read_photos(detector, photos)
            row = _numbers_row(path, refine, results, detections)
            row["engine"] = detector.provider
            numbers = [r.number for r in results]
            if path == onnx_paths[0]:
                first[refine], first_kind = numbers, detector.is_detector
                if refine:  # as the runtime reads by default: what the failure sheet shows
                    shown = detections
            elif refine in first and detector.is_detector == first_kind:  # a one-digit model beside a detector: no
                row["same_number_as_first"] = float(np.mean([a == b for a, b in zip(numbers, first[refine],
                                                                                      strict=True)]))
            rows.append(row)
    return rows, shown


def _numbers_row(path: Path, refine: bool, results: list[PhotoResult], detections: list[Any]) -> dict[str, Any]:
    """One model's row of numbers_table."""
    row: dict[str, Any] = {"model": path.name if refine else f"{path.name} --no-refine", "refine": refine,
                           **detection_figures(results), "errors": error_breakdown(results)}
    folders = by_folder(results)
    if len(folders) > 1:
        row["by_folder"] = folders
    one = [(r, d) for r, d in zip(results, detections, strict=True) if len(r.true_labels) == 1]
    if one:
        row["one_digit"] = _one_digit(one)
    row["failures"] = [{"photo": r.origin, "true": r.true_number, "read": r.number}
                       for r in results if r.number != r.true_number]
    return row


def by_folder(results: list[PhotoResult]) -> list[dict[str, Any]]:
    """The figures per folder the photos came from (their origin's first part: a detection build's validation
    photos mix the train sample's with svhn-test-sample/fit's, framed otherwise), in first-seen order."""
    groups: dict[str, list[PhotoResult]] = {}
    for r in results:
        groups.setdefault(r.origin.split("/")[0] if "/" in r.origin else "", []).append(r)
    return [{"folder": folder, **overall_figures(sel)} for folder, sel in groups.items()]


def _one_digit(pairs: list[tuple[PhotoResult, Any]]) -> dict[str, Any]:
    """One-digit figures from the Detection's most confident digit (what a one-digit reader shows)."""
    best = [PhotoResult(np.array([d.bbox], np.float32), np.array([d.digit]), r.true_boxes, r.true_labels, r.share,
                        r.origin) for r, d in pairs]
    out = one_digit_figures(best)
    out["number_is_the_digit"] = float(np.mean([r.number == r.true_number for r, _ in pairs]))
    return out


def numbers_markdown(rows: list[dict[str, Any]]) -> str:
    """Overall and per height share: whole numbers read exactly / digit recall (photos); where the
    wrong numbers go wrong; the one-digit photos' figures where there are any."""
    shares = [b["share"] for b in rows[0]["by_share"]]
    head = ("| model | numbers exact | digit recall | digit recall at IoU 0.3 | digit precision | matched IoU | "
            + " | ".join(f"share {s}: numbers / recall" for s in shares) + " |\n|---|---|---|---|---|---|"
            + "---|" * len(shares) + "\n")
    body = ""
    for r in rows:
        by = {b["share"]: b for b in r["by_share"]}
        cells = " | ".join(f"{by[s]['number_accuracy']:.3f} / {by[s]['digit_recall']:.3f} ({by[s]['photos']})"
                           if s in by else "-" for s in shares)
        body += (f"| {r['model']} | {r['number_accuracy']:.3f} ({r['photos']}) | {r['digit_recall']:.3f} | "
                 f"{r['digit_recall_lenient']:.3f} | {r['digit_precision']:.3f} | {r['matched_iou']:.3f} | {cells} |\n")
    body += _grouped_table(rows, "by_pixels", "pixels", "By the photo's size where the digits are: the tallest "
                           "digit's height in the photo's own pixels")
    body += _grouped_table(rows, "by_folder", "folder", "By the folder the photos came from")
    body += ("\nWhere the wrong numbers go wrong (a digit is found at IoU >= 0.5; a loose box overlaps a true digit "
             "at IoU 0.1-0.5; a photo counts under each kind it shows):\n\n| model | wrong numbers | a digit missed | "
             "a digit misread | a loose box | a digit added | order only | digits missed / misread / loose / added "
             "| right numbers: digits whose box misses IoU 0.5 |\n|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        e = r["errors"]
        p, d = e["photos_with"], e["digits"]
        body += (f"| {r['model']} | {e['wrong_numbers']} | {p['missed']} | {p['misread']} | {p['loose']} | "
                 f"{p['extra']} | {p['order']} | {d['missed']} / {d['misread']} / {d['loose']} / {d['extra']} | "
                 f"{e['loose_in_right_numbers']} |\n")
    same = [r for r in rows if "same_number_as_first" in r]
    if same:
        reference = rows[0]["model"].removesuffix(" --no-refine")
        body += (f"\nThe same number read as {reference} (the same refine setting), photo by photo:\n\n"
                 "| model | same number | engine |\n|---|---|---|\n")
        for r in same:
            body += f"| {r['model']} | {r['same_number_as_first']:.4f} | {r['engine']} |\n"
    one = [r for r in rows if "one_digit" in r]
    if one:
        body += ("\nOne-digit photos among them (the most confident digit):\n\n| model | photos | accuracy | mean IoU "
                 "| number is the digit |\n|---|---|---|---|---|\n")
        for r in one:
            o = r["one_digit"]
            body += (f"| {r['model']} | {o['photos']} | {o['accuracy']:.3f} | {o['mean_iou']:.3f} | "
                     f"{o['number_is_the_digit']:.3f} |\n")
    return head + body


def _grouped_table(rows: list[dict[str, Any]], field: str, key: str, title: str) -> str:
    """A table of each row's ``field`` groups (named by ``key``): numbers exact / digit recall (photos) per
    group, one line per model; "" where no row has any."""
    groups = list(dict.fromkeys(b[key] for r in rows for b in r.get(field, [])))
    if not groups:
        return ""
    out = (f"\n{title} (numbers exact / digit recall (photos)):\n\n| model | " + " | ".join(g or "(none)" for g in groups)
           + " |\n|---|" + "---|" * len(groups) + "\n")
    for r in rows:
        by = {b[key]: b for b in r.get(field, [])}
        out += (f"| {r['model']} | " + " | ".join(
            f"{by[g]['number_accuracy']:.3f} / {by[g]['digit_recall']:.3f} ({by[g]['photos']})" if g in by else "-"
            for g in groups) + " |\n")
    return out


def numbers_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """Whole-number accuracy and digit recall per height share bin, one line pair per model."""
    from digitloc.annotations.charts import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4))
    for r in rows:
        xs = [b["share"] for b in r["by_share"]]
        ax.plot(xs, [b["number_accuracy"] for b in r["by_share"]], marker="o", label=f"{r['model']}: numbers")
        ax.plot(xs, [b["digit_recall"] for b in r["by_share"]], marker="s", ls="--", label=f"{r['model']}: digit recall")
    ax.set_xlabel("tallest digit's height / photo height")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("house numbers read through the runtime, photos as they are")
    return save_figure(fig, path)


def failure_sheet(photos: list[Any], detections: list[Any], rows: list[dict[str, Any]], path: Path,
                  count: int = 24) -> Path:
    """A PNG of the first ``count`` photos read wrong by the first model (with refine, as the runtime
    reads by default): each annotated with ``detections`` (numbers_table's reading of them, so the
    sheet shows what the table counted), with the true number."""
    import cv2

    from digitloc.runtime.draw import annotate
    from digitloc.runtime.fileio import atomic_path

    shipped = next(r for r in rows if r.get("refine", True))  # the first model as the runtime reads by default
    wrong = {f["photo"]: f["true"] for f in shipped["failures"]}
    chosen = [(p, d) for p, d in zip(photos, detections, strict=True) if p.origin in wrong][:count]
    tiles = []
    for p, d in chosen:
        tile = cv2.resize(annotate(p.image, d), (256, 128), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, f"true {wrong[p.origin]}", (4, 122), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 0), 1)
        tiles.append(tile)
    if not tiles:
        tiles = [np.zeros((128, 256, 3), np.uint8)]
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i: i + 4]) for i in range(0, len(tiles), 4)])
    with atomic_path(path, suffix=".png") as tmp:
        cv2.imwrite(str(tmp), grid)
    return path
