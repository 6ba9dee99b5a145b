"""Photos a model reads differently from SVHN's label, drawn for a person to judge who is wrong.

    python scripts/label_sheet.py models/digitloc-detector-int8.onnx \
        -o benchmarks/results/detector/one-digit/read-as-more-digits.png
    python scripts/label_sheet.py models/digitloc-detector-int8.onnx --wrong \
        --svhn ../shared/data/svhn-test-sample/eval -o benchmarks/results/detector/eval/wrong-numbers.png

Without ``--wrong``: the one-digit photos of the folder that the model reads as more than one digit.
SVHN boxes one digit on each of the 272 "one-digit" photos of the train sample, but some of those
photos show a house number of two or more digits of which only one was boxed (a selection effect:
a number whose other digits went unboxed lands among the one-digit photos). A reader that reads
every digit is scored wrong there on "the number is the digit".

With ``--wrong``: every photo of the folder whose number is read wrong (the digits left to right
against SVHN's, as ``digitloc-bench photos`` counts it), whatever its digit count.

With ``--loose``: every photo whose number is read right but where a digit's box misses SVHN's at IoU
0.5 (``digitloc-bench photos``' "right numbers: digits whose box misses IoU 0.5"): the digit recall a
right reading loses to a box drawn otherwise than the annotator's.

    python scripts/label_sheet.py models/digitloc-detector-int8.onnx --loose \
        --svhn ../shared/data/svhn-test-sample/eval -o benchmarks/results/detector/eval/loose-boxes.png

Each photo is drawn twice, side by side: clean (boxes and labels drawn over a 30-pixel photo hide
it), and with SVHN's boxes in green and the digits read in red; under it the file, SVHN's label (t)
and the number read (r). A person can then tell a digit added or missed by the model from a digit
SVHN left unboxed. A judgement made from a sheet is kept beside it (``label-audit*.csv``: judge again
when the model changes). Reads the photos through the runtime's Detector, as digitloc-bench photos
does; the list of photos drawn is written beside the sheet (.txt).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import numpy as np

TILE_H, TILE_W, CAPTION = 72, 200, 18
WRONG_TILE_H, WRONG_TILE_W = 96, 400  # two copies of the photo side by side, each up to half the width


def tile(image: np.ndarray, caption: str, height: int = TILE_H, width: int = TILE_W) -> np.ndarray:
    """The photo at ``height`` pixels high (cut at ``width`` wide), the caption under it, on white."""
    import cv2

    scaled = cv2.resize(image, (max(8, round(image.shape[1] * height / image.shape[0])), height))[:, :width]
    out = np.full((height + CAPTION, width, 3), 255, np.uint8)
    out[:height, :scaled.shape[1]] = scaled
    cv2.putText(out, caption, (2, height + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
    return out


def wrong_tile(image: np.ndarray, result, caption: str) -> np.ndarray:
    """A --wrong tile: the clean photo and the boxed one side by side (each cut at half the width)."""
    import cv2

    from digitloc.benchmarks.misses import boxed_photo

    half = WRONG_TILE_W // 2
    clean = cv2.resize(image, (max(8, round(image.shape[1] * WRONG_TILE_H / image.shape[0])), WRONG_TILE_H),
                       interpolation=cv2.INTER_CUBIC)[:, :half - 2]
    marked = boxed_photo(image, result.true_boxes, result.pred_boxes, WRONG_TILE_H)[:, :half - 2]
    out = np.full((WRONG_TILE_H + CAPTION, WRONG_TILE_W, 3), 255, np.uint8)
    out[:WRONG_TILE_H, :clean.shape[1]] = clean
    out[:WRONG_TILE_H, half:half + marked.shape[1]] = marked
    cv2.putText(out, caption, (2, WRONG_TILE_H + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
    return out


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--svhn", default="../shared/data/svhn-train-sample/train", show_default=True,
              help="SVHN-format folder whose photos are read.")
@click.option("--wrong", is_flag=True,
              help="Draw every photo whose number is read wrong, not the one-digit photos read as more digits.")
@click.option("--loose", is_flag=True,
              help="Draw every photo whose number is read right but a digit's box misses SVHN's at IoU 0.5.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The sheet (PNG); a .txt beside it lists the photos.")
@click.option("--columns", type=click.IntRange(min=1), default=None,
              help="Tiles per row (default: 5, or 3 with --wrong).")
@click.option("--force", is_flag=True, help="Replace an existing sheet.")
def main(model: Path, svhn: str, wrong: bool, loose: bool, output: Path, columns: int | None, force: bool) -> None:
    """Draw the photos of SVHN that MODEL reads otherwise than their label says (see --wrong, --loose)."""
    from digitloc.annotations.detmetrics import truths_unmatched
    from digitloc.benchmarks.numbers import labelled_photos, read_photos
    from digitloc.runtime.detector import Detector
    from digitloc.runtime.fileio import atomic_write_bytes, atomic_write_text, check_writable

    if wrong and loose:
        raise click.UsageError("--wrong and --loose draw different photos: give one")
    whole = wrong or loose  # every photo of the folder, drawn side by side with the boxes
    for path in (output, output.with_suffix(".txt")):
        try:
            check_writable(path, force)
        except OSError as exc:
            raise click.ClickException(str(exc)) from None
    photos = [p for p in labelled_photos([svhn]) if whole or len(p.labels) == 1]
    if not photos:
        raise click.ClickException(f"{svhn}: no {'labelled' if whole else 'one-digit'} photo to read")
    results, _ = read_photos(Detector(model, provider="cpu"), photos)
    if wrong:
        chosen = [(p, r) for p, r in zip(photos, results, strict=True) if r.number != r.true_number]
        what = "photos whose number is read wrong"
    elif loose:
        chosen = [(p, r) for p, r in zip(photos, results, strict=True)
                  if r.number == r.true_number and truths_unmatched(r)]
        what = "photos read right with a digit's box under IoU 0.5"
    else:
        chosen = [(p, r) for p, r in zip(photos, results, strict=True) if len(r.pred_classes) > 1]
        what = "one-digit photos read as more than one digit"
    if not chosen:
        raise click.ClickException(f"{model}: no {what} among the {len(photos)} photos of {svhn}")
    import cv2

    columns = columns or (3 if whole else 5)
    tiles = [(wrong_tile(p.image, r, f"{Path(p.origin).stem} t{r.true_number} r{r.number or '-'}") if whole
              else tile(p.image, f"{Path(p.origin).stem} t{r.true_number} r{r.number}")) for p, r in chosen]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    sheet = np.vstack([np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)])
    ok, png = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])  # BGR, as OpenCV reads the photos
    if not ok:
        raise click.ClickException(f"{output}: OpenCV could not encode the sheet")
    atomic_write_bytes(output, png.tobytes())
    lines = [f"Command: python {' '.join(shlex.quote(a) for a in sys.argv)}",
             f"{len(chosen)} of {len(photos)} {what} (file, label, read):"]
    lines += [f"{Path(p.origin).name} {r.true_number} {r.number or '-'}" for p, r in chosen]
    atomic_write_text(output.with_suffix(".txt"), "\n".join(lines) + "\n")
    click.echo(f"{len(chosen)} of {len(photos)} photos -> {output}")


if __name__ == "__main__":
    main()
