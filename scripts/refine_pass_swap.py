"""Which of the refine reading's two passes carries int8's disagreement with fp32: each photo read with
the first pass by one file and the refine pass (the window cut around the digits the first pass read) by
the other, in the four combinations, on a detection build's validation photos.

    python scripts/refine_pass_swap.py s9-fp32.onnx,s9-int8.onnx --validation-of data/det192x96-d
"""

from __future__ import annotations

from typing import Any

import click


def swapped(first: Any, second: Any) -> Any:
    """``first``, reading each batch's first pass itself and its refine pass with ``second``."""
    calls = {"n": 0}
    detect_pass, detect_batch = type(first)._detect_pass, type(first)._detect_batch

    def one_pass(self: Any, images: list) -> list:
        calls["n"] += 1
        return detect_pass(first if calls["n"] == 1 else second, images)

    def batch(self: Any, loaded: list) -> list:
        calls["n"] = 0
        return detect_batch(self, loaded)

    first._detect_pass, first._detect_batch = one_pass.__get__(first), batch.__get__(first)
    return first


@click.command()
@click.argument("pairs", nargs=-1, required=True)
@click.option("--validation-of", "build", required=True, type=click.Path(file_okay=False, exists=True),
              help="Detection build whose validation photos to read.")
def main(pairs: tuple[str, ...], build: str) -> None:
    """Print, per FP32,INT8 pair, the numbers read right and the photos read as fp32 + refine reads them."""
    from digitloc.annotations.dataset.detection import validation_photos
    from digitloc.annotations.detmetrics import detection_figures
    from digitloc.benchmarks.numbers import read_photos
    from digitloc.runtime.detector import Detector

    photos = validation_photos(build)
    for pair in pairs:
        files = dict(zip(("fp32", "int8"), pair.split(","), strict=True))
        reference = None
        for first, second in (("fp32", "fp32"), ("fp32", "int8"), ("int8", "fp32"), ("int8", "int8")):
            detector = swapped(Detector(files[first], provider="cpu"), Detector(files[second], provider="cpu"))
            results, _ = read_photos(detector, photos)
            numbers = [tuple(r.pred_classes.tolist()) for r in results]
            reference = reference or numbers
            same = sum(a == b for a, b in zip(numbers, reference, strict=True))
            right = round(detection_figures(results)["number_accuracy"] * len(results))
            click.echo(f"{files['fp32']}: first pass {first}, refine pass {second}: the number fp32 + refine reads "
                       f"{same}/{len(numbers)}; numbers right {right}")


if __name__ == "__main__":
    main()
