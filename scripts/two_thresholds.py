"""Numbers a detector reads with one threshold for its first pass and another for its refine pass (session 23,
models/det192x96-reading-rules-tried/README.md).

    python scripts/two_thresholds.py models/digitloc-detector-int8.onnx --build data/det192x96-d -o two.json
    python scripts/two_thresholds.py MODEL --build BUILD --first 0.25 --first 0.3 --refine 0.25 -o two.json

The first pass's threshold (T1) decides the digits read where no refine follows and where the refine window goes;
the refine pass's (T2) decides what is read in that window. The runtime uses one (the model's, 0.25 for stage 20).
Choose on a build's validation or training photos, never on a test split.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import click


def two_threshold_detector(model: Path) -> Any:
    """A Detector whose first pass reads at ``t1`` and whose refine pass reads at ``t2`` (set as attributes)."""
    from digitloc.runtime.detector import Detector

    class TwoThresholds(Detector):
        t1 = t2 = 0.25

        def _detect_batch(self, loaded: list) -> list:
            self._passes = 0
            return super()._detect_batch(loaded)

        def _detect_pass(self, images: list) -> list:
            # The runtime reads min_score in each pass; it is left at the last pass's (T2) afterwards.
            self._min_score = self.t1 if self._passes == 0 else self.t2
            self._passes += 1
            return super()._detect_pass(images)

    return TwoThresholds(model, provider="cpu")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--build", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A detection build (digitloc-data detection): its validation and training photos are read.")
@click.option("--first", "t1s", multiple=True, type=click.FloatRange(0, 1), default=(0.2, 0.25, 0.3),
              show_default=True, help="A first-pass threshold (T1); repeatable.")
@click.option("--refine", "t2s", multiple=True, type=click.FloatRange(0, 1), default=(0.2, 0.25, 0.3, 0.35),
              show_default=True, help="A refine-pass threshold (T2); repeatable.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
def main(model: Path, build: Path, t1s: tuple[float, ...], t2s: tuple[float, ...], output: Path, force: bool) -> None:
    """Read BUILD's validation and training photos with MODEL at every (T1, T2); one line per reading."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.annotations.dataset.detection import build_photos
    from digitloc.benchmarks.numbers import reading_summary, summary_line
    from digitloc.runtime.fileio import atomic_write_text, check_writable

    if not output.parent.is_dir():
        raise click.UsageError(f"{output}: its folder {output.parent} does not exist")
    try:
        check_writable(output, force)
    except OSError as exc:
        raise click.UsageError(str(exc)) from None
    detector = two_threshold_detector(model)
    if not detector.is_detector:
        raise click.UsageError(f"{model}: not a detector (a one-digit model reads one pass of one digit)")
    try:
        sets = {"val": build_photos(build, "validation"), "train": build_photos(build, "training")}
    except DatasetError as exc:
        raise click.UsageError(str(exc)) from None
    out = {}
    for t1, t2 in itertools.product(t1s, t2s):
        detector.t1, detector.t2 = t1, t2
        for name, photos in sets.items():
            out[f"{t1} {t2} {name}"] = summary = reading_summary(detector, photos)
            click.echo(f"{t1} {t2} {name} {summary_line(summary)}")
    atomic_write_text(output, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
