"""The one-digit photos a model reads as more than one digit, drawn clean, for a person to judge.

    python scripts/one_digit_sheet.py models/digitloc-detector-int8.onnx \
        -o benchmarks/results/detector/one-digit/read-as-more-digits.png

SVHN boxes one digit on each of the 272 "one-digit" photos of the train sample, but some of those
photos show a house number of two or more digits of which only one was boxed (a selection effect:
a number whose other digits went unboxed lands among the one-digit photos). A reader that reads
every digit is scored wrong there on "the number is the digit". This sheet shows each photo the
model reads as more than one digit, unmarked (boxes and labels drawn over a 30-pixel photo hide
it), with its file, SVHN's label (t) and the number read (r), so that a person can tell a digit
added by the model from a digit SVHN left unboxed. A judgement made from it is kept beside it
(``label-audit.csv``: a person's judgement of the sheet the shipped int8 drew in session 13; judge again when
the model changes). Reads the photos through the runtime's Detector, as digitloc-bench photos does.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import numpy as np

TILE_H, TILE_W, CAPTION = 72, 200, 18


def tile(image: np.ndarray, caption: str) -> np.ndarray:
    """The photo at TILE_H pixels high (cut at TILE_W wide), the caption under it, on white."""
    import cv2

    scaled = cv2.resize(image, (max(8, round(image.shape[1] * TILE_H / image.shape[0])), TILE_H))[:, :TILE_W]
    out = np.full((TILE_H + CAPTION, TILE_W, 3), 255, np.uint8)
    out[:TILE_H, :scaled.shape[1]] = scaled
    cv2.putText(out, caption, (2, TILE_H + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 200), 1, cv2.LINE_AA)
    return out


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--svhn", default="../shared/data/svhn-train-sample/train", show_default=True,
              help="SVHN-format folder whose one-digit photos are read.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The sheet (PNG); a .txt beside it lists the photos.")
@click.option("--columns", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing sheet.")
def main(model: Path, svhn: str, output: Path, columns: int, force: bool) -> None:
    """Draw the one-digit photos MODEL reads as more than one digit."""
    from digitloc.benchmarks.numbers import labelled_photos, read_photos
    from digitloc.runtime.detector import Detector
    from digitloc.runtime.fileio import atomic_write_bytes, atomic_write_text, check_writable

    for path in (output, output.with_suffix(".txt")):
        try:
            check_writable(path, force)
        except OSError as exc:
            raise click.ClickException(str(exc)) from None
    photos = [p for p in labelled_photos([svhn]) if len(p.labels) == 1]
    results, _ = read_photos(Detector(model, provider="cpu"), photos)
    chosen = [(p, r) for p, r in zip(photos, results, strict=True) if len(r.pred_classes) > 1]
    if not chosen:
        raise click.ClickException(f"{model}: reads no one-digit photo of {svhn} as more than one digit")
    import cv2

    tiles = [tile(p.image, f"{Path(p.origin).stem} t{r.true_number} r{r.number}") for p, r in chosen]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    sheet = np.vstack([np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)])
    ok, png = cv2.imencode(".png", sheet)  # the photos are BGR, as OpenCV reads them
    if not ok:
        raise click.ClickException(f"{output}: OpenCV could not encode the sheet")
    atomic_write_bytes(output, png.tobytes())
    lines = [f"Command: python {' '.join(shlex.quote(a) for a in sys.argv)}",
             f"{len(chosen)} of {len(photos)} one-digit photos read as more than one digit (file, label, read):"]
    lines += [f"{Path(p.origin).name} {r.true_number} {r.number}" for p, r in chosen]
    atomic_write_text(output.with_suffix(".txt"), "\n".join(lines) + "\n")
    click.echo(f"{len(chosen)} of {len(photos)} photos -> {output}")


if __name__ == "__main__":
    main()
