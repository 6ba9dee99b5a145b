"""Numbers a detector reads (refine on) on a detection build's validation photos, and with --training its training
photos, once per value of one ``runtime.number.read_digits`` parameter (a reading rule being tried).

    python scripts/read_rule_sweep.py models/digitloc-detector-int8.onnx --rule end_gap --values 0,0.5,1 \\
        --build data/det192x96-d --training -o bench/end-gap.json

The rule is a keyword parameter of ``read_digits`` (patch it in first: session 21's ``max_cover`` and ``end_gap``
were such patches, reverted; models/det192x96-reading-rules-tried/README.md), one the Detector leaves at its default.
A name ``read_digits`` lacks, or one the Detector sets itself, is refused: the sweep never reads without the rule.
Choose on validation or training photos, never on a test split.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import click

# What runtime.detector.Detector passes to read_digits itself: a default patched there would change nothing read.
SET_BY_DETECTOR = ("min_score", "max_digits", "one_line")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--rule", required=True, help="The read_digits keyword parameter to sweep.")
@click.option("--values", required=True, help="Its values, comma-separated.")
@click.option("--build", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A detection build (digitloc-data detection): its validation photos are read.")
@click.option("--training", is_flag=True, help="Also read the build's training photos.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
def main(model: Path, rule: str, values: str, build: Path, training: bool, output: Path) -> None:
    """Read BUILD's photos with MODEL once per --values of read_digits' --rule; one line per reading."""
    from digitloc.annotations.dataset.detection import build_photos
    from digitloc.benchmarks.numbers import reading_summary, summary_line
    from digitloc.runtime import number
    from digitloc.runtime.detector import Detector
    from digitloc.runtime.fileio import atomic_write_text

    named = [p.name for p in inspect.signature(number.read_digits).parameters.values() if p.default is not p.empty]
    if rule not in named or rule in SET_BY_DETECTOR:
        free = ", ".join(n for n in named if n not in SET_BY_DETECTOR)
        raise click.BadParameter(f"{rule!r} is not a read_digits parameter the Detector leaves at its default "
                                 f"(those: {free})", param_hint="--rule")
    try:
        swept = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{values!r}: give numbers separated by commas", param_hint="--values") from None
    sets = {"val": build_photos(build, "validation")}
    if training:
        sets["train"] = build_photos(build, "training")
    detector = Detector(model, provider="cpu")
    defaults = list(number.read_digits.__defaults__ or ())
    out = {}
    for value in swept:
        defaults[named.index(rule)] = value
        number.read_digits.__defaults__ = tuple(defaults)
        for name, photos in sets.items():
            out[f"{name} {value}"] = summary = reading_summary(detector, photos)
            click.echo(f"{name} {value} {summary_line(summary)}")
    atomic_write_text(output, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
