"""digitloc-data: convert, check, build and preview SVHN-style data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from digitloc.annotations.check import check_folder
from digitloc.annotations.dataset.data import KIND_ALL
from digitloc.annotations.dataset.detection import DEFAULT_MIX, KINDS
from digitloc.annotations.dataset.options import kind_option, seed_option, svhn_option
from digitloc.annotations.dataset.synth import SynthConfig
from digitloc.annotations.digitstruct import AnnotationError, read_annotations, write_json
from digitloc.runtime.fileio import OutputDirError, OutputExistsError, check_writable, prepare_output_dir
from digitloc.runtime.options import detector_size_option, fail, force_option, needs_extras, output_option, size_option

WORKERS = click.option("--workers", default=2, show_default=True, help="Worker processes.")  # build and detection


@needs_extras("digitloc-data", "train")
@click.group()
def main() -> None:
    """Read, check and turn SVHN annotations into digitloc datasets."""


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@output_option(help="JSON file to write.", required=True, folder=False)
@force_option
def convert(source: Path, output: Path, force: bool) -> None:
    """Convert SVHN's digitStruct.mat (MATLAB v7.3) to the JSON form."""
    try:
        check_writable(output, force)
        records = read_annotations(source)
        write_json(records, output)
    except (AnnotationError, OutputExistsError) as exc:
        fail(str(exc))
    click.echo(f"wrote {len(records)} records, {sum(len(r.boxes) for r in records)} digits to {output}")


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--annotations", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="digitStruct .json or .mat (default: the one inside FOLDER).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--worst", default=10, show_default=True, help="How many offenders to list.")
def check(folder: Path, annotations: Path | None, as_json: bool, worst: int) -> None:
    """Report missing or unreadable images, boxes outside the image and empty boxes.

    Exits non-zero when an image is missing or unreadable, or a box is empty or bad;
    boxes that overshoot the image by a little are clipped and only counted.
    """
    try:
        report = check_folder(folder, annotations)
    except AnnotationError as exc:
        fail(str(exc))
    if report.images == 0 and not report.bad_entries:
        fail(f"{report.annotations}: holds no records")
    summary = report.to_dict(worst)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        click.echo(f"{summary['annotations']}: {summary['images']} images, {summary['digits']} digits")
        click.echo(f"  digits per image: {summary['digits_per_image']}")
        click.echo(f"  per digit: {summary['digit_counts']}")
        click.echo(f"  boxes past the edge (clipped): {summary['clipped_boxes']}"
                   + "".join(f"\n    {w['file']}: {w['px']:g} px" for w in summary["worst_overshoots_px"]))
        click.echo(f"  empty or outside boxes: {summary['empty_or_outside_boxes']}")
        click.echo(f"  missing or unreadable images: {summary['bad_images']}")
        click.echo(f"  bad entries: {summary['bad_entries']}")
        for problem in summary["problems"]:
            click.echo(f"    {problem}")
    if not report.ok:
        sys.exit(1)


def _split_shares(value: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in value.split(":"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise click.BadParameter(f"expected TRAIN:VAL:TEST shares such as 0.9:0.1:0, got {value!r}")
    return parts  # type: ignore[return-value]


@main.command()
@svhn_option()
@click.option("--synthetic", default=0, show_default=True, help="How many synthetic photos to add to train.")
@click.option("--crops-per-digit", default=4, show_default=True,
              help="Windows cut around each digit of training photos (0: none).")
@size_option
@seed_option
@click.option("--one-digit-split", default="0:0.5:0.5", show_default=True,
              help="TRAIN:VAL:TEST shares of one-digit photos (kept for evaluation by default).")
@click.option("--multi-digit-split", default="0.9:0.1:0", show_default=True,
              help="TRAIN:VAL:TEST shares of multi-digit photos.")
@click.option("--fonts", "font_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Extra folder of TTF/OTF fonts for synthetic digits (repeatable).")
@click.option("--glyph-width", type=click.FloatRange(min=0.2, max=2.0), default=SynthConfig.glyph_width, show_default=True,
              help="Width factor of synthetic glyphs (1.0: the font's own; SVHN's digits are narrower).")
@click.option("--box-margin", type=click.FloatRange(min=0.0, max=0.5), default=SynthConfig.box_margin,
              show_default=True,
              help="Side margin of synthetic boxes, as a share of the digit height.")
@click.option("--framing-style", "framing", type=click.Choice(["sample", "wide"]), default="sample", show_default=True,
              help="Windows and synthetic photos framed like the sample's tight one-digit photos, or wide: digit "
                   "height 0.15-0.95 of the photo, centre anywhere in the middle 60 %, aspect 1-3.5 (as real photos).")
@click.option("--context", type=click.FloatRange(min=0.0, max=1.0), default=0.0, show_default=True,
              help="Share of windows that show the neighbouring digits whole (as many real one-digit photos do); "
                   "the others show at most part of a neighbour. The target stays the digit the window frames.")
@click.option("--context-side", type=click.Choice(["both", "right"]), default="both", show_default=True,
              help="Which neighbours --context windows show whole: on both sides, or only to the right of the digit.")
@WORKERS
@output_option(help="Dataset folder to write: train/val/test .npz and manifest.json.", required=True)
@force_option
def build(svhn: tuple[str, ...], synthetic: int, crops_per_digit: int, size: tuple[int, int], seed: int,
          one_digit_split: str, multi_digit_split: str, font_dirs: tuple[str, ...], glyph_width: float,
          box_margin: float, framing: str, context: float, context_side: str, workers: int, output: Path,
          force: bool) -> None:
    """Build train/val/test sets (uint8 .npz and manifest.json) into OUTPUT."""
    from digitloc.annotations.dataset.data import BuildConfig, DatasetError, build_dataset

    cfg = BuildConfig(svhn=list(svhn), size=size, seed=seed, crops_per_digit=crops_per_digit,
                      synthetic=synthetic, font_dirs=list(font_dirs), glyph_width=glyph_width,
                      box_margin=box_margin, framing=framing, context=context, context_side=context_side,
                      one_digit_split=_split_shares(one_digit_split),
                      multi_digit_split=_split_shares(multi_digit_split), workers=workers)
    existed = output.exists()
    try:
        prepare_output_dir(output)  # an unusable -o is one line before any work, not a traceback after it
        manifest = build_dataset(cfg, output, force=force)
    except (DatasetError, OutputExistsError, OSError) as exc:
        if not existed and output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        fail(str(exc) if not isinstance(exc, OSError) or isinstance(exc, OutputDirError | OutputExistsError)
             else f"{output}: cannot write ({exc.strerror or exc})")
    for split, info in manifest["splits"].items():
        click.echo(f"{split}: {info['samples']} samples {info['per_kind']} from {info['photos']} photos")
    if manifest["problem_count"]:
        click.echo(f"{manifest['problem_count']} problems, dropped {manifest['dropped']} "
                   f"(see {output / 'manifest.json'})", err=True)
    click.echo(f"wrote {output}")


@main.command()
@svhn_option(required=True)
@detector_size_option
@click.option("--samples", "count", default=40000, show_default=True, help="Composed training samples.")
@click.option("--val-share", type=click.FloatRange(min=0.01, max=0.5), default=0.1, show_default=True,
              help="Share of photos kept whole for validation and the threshold choice.")
@click.option("--folder-weight", "folder_weights", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Per --svhn folder, in their order: how often its photos are drawn into samples (default 1 "
                   "each; e.g. 1 and 3 draw the second folder's photos three times as often).")
@click.option("--split-seed", default=0, show_default=True,
              help="Seed of the validation split alone: builds with other --seed values keep the same photos out.")
@click.option("--mix", "mix", multiple=True, metavar="KIND=SHARE",
              help=f"Set one kind's share of the samples (repeatable; kinds: {', '.join(KINDS)}; shares are "
                   "relative, 0 leaves a kind out; the others keep the default mix "
                   f"{' '.join(f'{k}={v:g}' for k, v in DEFAULT_MIX.items())}).")
@click.option("--synth-distractors", "distractors", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Chance that a synthetic number's plate also shows, unboxed, letters after the number, a line "
                   "of letters above or below it, or a frame around it (what is not a digit, beside one).")
@click.option("--rotate", type=click.FloatRange(0, 45), default=5.0, show_default=True,
              help="Half of the samples are turned by up to this many degrees either way (boxes follow the digit).")
@click.option("--degrade", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Chance that a sample is shrunk 1.5-4x and scaled back up, half of those JPEG-compressed "
                   "between: small digits as the refine pass reads them, enlarged from few pixels.")
@click.option("--ignore", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON of regions per training photo (scripts/unboxed_digits.py) that the samples carry as "
                   "neither digit nor background: real digits SVHN left unboxed.")
@seed_option
@WORKERS
@output_option(help="Folder to write the detection set to.", required=True)
@force_option
def detection(svhn: tuple[str, ...], size: tuple[int, int], count: int, val_share: float,
              folder_weights: tuple[float, ...], split_seed: int, mix: tuple[str, ...], distractors: float,
              rotate: float, degrade: float, ignore: str | None, seed: int, workers: int, output: Path, force: bool) -> None:
    """Build a detection set into OUTPUT: train.npz (composed samples: whole photos letterboxed, zoom-out,
    mosaics, crops, synthetic numbers, empty windows; every digit boxed), val.npz (whole photos
    letterboxed), manifest.json and preview.png. The held-out one-digit photos of the folders are skipped."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.annotations.dataset.detection import DetectionConfig, build_detection, load_ignore, mix_with
    from digitloc.annotations.dataset.detection import folder_weights as weights_of

    shares: dict[str, float] = {}
    for item in mix:
        kind, _, value = item.partition("=")
        try:
            shares[kind.strip()] = float(value)
        except ValueError:
            fail(f"--mix {item!r}: give KIND=SHARE, e.g. synth=0.05")
    try:
        cfg = DetectionConfig(svhn=tuple(svhn), size=size, count=count, val_share=val_share, seed=seed,
                              split_seed=split_seed, folder_weights=tuple(folder_weights), workers=workers,
                              mix=mix_with(shares), distractors=distractors, rotate=rotate,
                              degrade=degrade, ignore=ignore or "")
        weights_of(cfg)  # a wrong count or mix refused before the output folder is made
        if cfg.ignore:
            load_ignore(cfg.ignore)  # so is an ignore file that is not one
        prepare_output_dir(output)
        manifest = build_detection(cfg, output, force=force)
    except (DatasetError, OutputExistsError, OSError) as exc:
        fail(str(exc) if not isinstance(exc, OSError) or isinstance(exc, OutputDirError | OutputExistsError)
             else f"{output}: cannot write ({exc.strerror or exc})")
    click.echo(f"train: {manifest['samples']} samples {manifest['kinds']}, {manifest['digits']} digits, from "
               f"{manifest['train_photos']} photos; val: {manifest['val_photos']} photos"
               + (f"; {manifest['ignore_regions']} regions ignored, {manifest['ignore_boxes']} times in the samples"
                  if ignore else ""))
    click.echo(f"wrote {output}")


@main.command()
@click.argument("split", type=click.Path(dir_okay=False, path_type=Path))
@output_option(help="PNG file to write.", required=True, folder=False)
@click.option("--count", default=64, show_default=True, help="How many samples to show.")
@kind_option(default=KIND_ALL)
@seed_option
@force_option
def preview(split: Path, output: Path, count: int, kind: str, seed: int, force: bool) -> None:
    """Draw a grid of samples of SPLIT (.npz) with their boxes and labels."""
    from digitloc.annotations.dataset.data import DataSet, DatasetError
    from digitloc.annotations.dataset.preview import write_grid

    try:
        check_writable(output, force)
        data = DataSet.load(split)
        shown = write_grid(data, output, count=count, kind=None if kind == KIND_ALL else kind, seed=seed)
    except (DatasetError, OutputExistsError, ValueError) as exc:
        fail(str(exc))
    click.echo(f"wrote {output} ({shown} samples)")
