"""Numbers a detector reads on a detection build's photos under variants of the Detector's two passes
(session 22, models/det192x96-s22-tried/): the first pass over the whole photo, the refine pass over a window
cut around the digits it read.

    python scripts/pass_variants.py models/digitloc-detector-int8.onnx --variants base,fuse,outside,third,both \\
        --build data/det192x96-d --training -o bench/passes.json

Variants (``base`` is the runtime as shipped):

- ``fuse``: the candidates of both passes pooled (the refine pass's moved back into the photo), read once;
- ``outside``: the refine pass's candidates with the first pass's whose centre lies outside its window;
- ``third``: a third pass around the refine pass's digits where they reach the outer tenth of its window (a
  digit cut at the window's edge) or it read more digits than the first pass;
- ``both``: ``third``, pooled as ``fuse``.

The runtime is patched in this process only. Choose on validation or training photos, never on a test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

VARIANTS = ("base", "fuse", "outside", "third", "both")


def _union(px: np.ndarray, order: np.ndarray) -> np.ndarray:
    from digitloc.runtime.detector import union_box

    return union_box(px[order])


def _windows(detector: Any, loaded: list[np.ndarray], unions: dict[int, np.ndarray]) -> tuple[list, list, list]:
    """The refine windows (clipped to each photo) around the unions, their crops and pixel offsets."""
    from digitloc.runtime.detector import clipped_refine_window

    idx, crops, wins = [], [], []
    for i, union in unions.items():
        x1, y1, x2, y2 = clipped_refine_window(union, loaded[i].shape, detector.input_size, detector.refine_share)
        idx.append(i)
        crops.append(loaded[i][y1:y2, x1:x2])
        wins.append((x1, y1, x2, y2))
    return idx, crops, wins


def _second(detector: Any, loaded: list[np.ndarray], unions: dict[int, np.ndarray]) -> dict[int, tuple]:
    """Each photo's refine pass over the window around its union: boxes in photo pixels, scores, classes,
    probs, the digits read, and the window."""
    idx, crops, wins = _windows(detector, loaded, unions)
    out = {}
    if crops:
        for i, (px, s, c, p, order), win in zip(idx, detector._detect_pass(crops), wins, strict=True):
            out[i] = (px + np.array([win[0], win[1], win[0], win[1]], np.float32), s, c, p, order, win)
    return out


def _reaches_edge(union: np.ndarray, win: tuple[int, int, int, int], shape: tuple[int, ...]) -> bool:
    """The digits read reach the outer tenth of a window side that is not the photo's own edge."""
    x1, y1, x2, y2 = win
    h, w = shape[:2]
    mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    return bool((union[0] < x1 + mx and x1 > 0) or (union[2] > x2 - mx and x2 < w)
                or (union[1] < y1 + my and y1 > 0) or (union[3] > y2 - my and y2 < h))


def variant_batch(mode: str) -> Any:
    """A replacement for ``Detector._detect_batch`` reading as ``mode`` says."""
    from digitloc.runtime.detector import DETECTOR_REFINE_BELOW, Detection, Digit
    from digitloc.runtime.number import read_digits, widen_boxes

    def detect_batch(self: Any, loaded: list[np.ndarray]) -> list[Any]:
        passes = self._detect_pass(loaded)
        unions = {}
        for i, (im, (px, _, _, _, order)) in enumerate(zip(loaded, passes, strict=True)):
            if self.refine and len(order):
                union = _union(px, order)
                if union[3] - union[1] < DETECTOR_REFINE_BELOW * im.shape[0]:
                    unions[i] = union
        second = _second(self, loaded, unions)
        if mode in ("third", "both"):
            again = {i: _union(px, order) for i, (px, _, _, _, order, win) in second.items() if len(order)
                     and (_reaches_edge(_union(px, order), win, loaded[i].shape) or len(order) > len(passes[i][4]))}
            second.update({i: v for i, v in _second(self, loaded, again).items() if len(v[4])})
        final = list(passes)
        for i, (px2, s2, c2, p2, order2, win) in second.items():
            if not len(order2):
                continue
            if mode in ("base", "third"):
                final[i] = (px2, s2, c2, p2, order2)
                continue
            px1, s1, c1, _, _ = passes[i]
            keep = np.ones(len(s1), bool)
            if mode == "outside":
                cx, cy = (px1[:, 0] + px1[:, 2]) / 2, (px1[:, 1] + px1[:, 3]) / 2
                keep = ~((cx >= win[0]) & (cx <= win[2]) & (cy >= win[1]) & (cy <= win[3]))
            px, s = np.concatenate([px2, px1[keep]]), np.concatenate([s2, s1[keep]])
            c = np.concatenate([c2, c1[keep]])
            final[i] = (px, s, c, p2, np.asarray(read_digits(px, s, self.min_score, self.max_digits,
                                                             one_line=self.one_line), np.int64))
        out = []
        for im, (px, s, c, p, order) in zip(loaded, final, strict=True):
            h, w = im.shape[:2]
            px = np.clip(widen_boxes(px, self.box_width), 0, np.array([w, h, w, h], np.float32))
            digits = tuple(Digit(int(c[i]), float(s[i]), tuple(float(v) for v in px[i])) for i in order)
            top = max(order, key=lambda i: s[i]) if len(order) else 0
            out.append(Detection(int(c[top]), float(s[top]), tuple(float(v) for v in px[top]),
                                 tuple(float(v) for v in p), digits))
        return out

    return detect_batch


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--variants", default=",".join(VARIANTS), show_default=True, help="Variants, comma-separated.")
@click.option("--build", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A detection build (digitloc-data detection): its validation photos are read.")
@click.option("--training", is_flag=True, help="Also read the build's training photos.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
def main(model: Path, variants: str, build: Path, training: bool, output: Path) -> None:
    """Read BUILD's photos with MODEL once per variant of the two passes; one line per reading."""
    from digitloc.annotations.dataset.detection import build_photos
    from digitloc.benchmarks.numbers import reading_summary, summary_line
    from digitloc.runtime.detector import Detector

    modes = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = [m for m in modes if m not in VARIANTS]
    if unknown or not modes:
        raise click.BadParameter(f"{variants!r}: variants are {', '.join(VARIANTS)}", param_hint="--variants")
    sets = {"val": build_photos(build, "validation")}
    if training:
        sets["train"] = build_photos(build, "training")
    detector = Detector(model, provider="cpu")
    shipped = Detector._detect_batch
    out = {}
    try:
        for mode in modes:
            Detector._detect_batch = variant_batch(mode)
            for name, photos in sets.items():
                out[f"{mode} {name}"] = summary = reading_summary(detector, photos)
                click.echo(f"{mode} {name} {summary_line(summary)}")
    finally:
        Detector._detect_batch = shipped
    from digitloc.runtime.fileio import atomic_write_text

    atomic_write_text(output, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
