"""digitloc-bench: latency per variant/provider/batch, and accuracy drift against Keras."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from digitloc.annotations.dataset.options import data_option, framing_option, kind_option, svhn_option
from digitloc.runtime.detector import OPENVINO, PROVIDERS, ProviderError
from digitloc.runtime.options import (
    box_width_option,
    fail,
    force_option,
    min_score_option,
    model_option,
    needs_extras,
    one_line_option,
    output_option,
    provider_option,
    spin_option,
    threads_option,
)

# Shared by the commands that read labelled photos (photos, misses).
validation_of_option = click.option(
    "--validation-of", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
    help="A detection build (digitloc-data detection) instead of --svhn: its validation photos, whole, from the "
         "folders its manifest names (never trained on; stages and thresholds are chosen there).")
training_of_option = click.option(
    "--training-of", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
    help="A detection build instead of --svhn: the whole photos its training samples were composed from. Read "
         "beside its validation photos: much better there overfits, little better underfits.")

# Names of the emulated CPUs (benchmarks/emulate.py's TARGETS), without importing it at start-up.
EMULATED = ("arm64", "arm64-a72", "arm64-max", "avx2")
LATENCY_PROVIDERS = (*PROVIDERS, OPENVINO)  # latency times OpenVINO's own runtime beside onnxruntime's providers


def _model_path(model: str | None) -> Path:
    """--model's file (the shipped default when not given); a missing one ends the command in one line."""
    from digitloc.runtime.detector import default_model_path

    path = Path(model) if model else default_model_path()
    if not path.is_file():
        fail(f"{path}: no such file")
    return path


def _ints(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected positive numbers, got {value!r}")
    return out


# The options two benchmarks share, declared once.
def batches_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--batches: the batch sizes to time, a comma list (one number: digitloc-run's --batch)."""
    return click.option("--batches", default=default, show_default=True, callback=lambda _c, _p, v: _ints(v),
                        help="Batch sizes to time, a comma list such as 1,8,32.")


warmup_option = click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
                             help="Untimed calls first, per configuration.")
repeats_option = click.option("--repeats", type=click.IntRange(min=1), default=7, show_default=True,
                              help="Repetitions of the measurement; the figures are their median.")


def _command(name: str) -> str:
    """How this run of ``digitloc-bench NAME`` was typed, for its report."""
    return f"digitloc-bench {name} " + " ".join(shlex.quote(a) for a in sys.argv[2:])


def _photo_source(svhn: tuple[str, ...], validation_of: Path | None, training_of: Path | None) -> str:
    """What a photos-reading command reads, in words; more or fewer than one of --svhn, --validation-of and
    --training-of end it in one line."""
    if bool(svhn) + (validation_of is not None) + (training_of is not None) != 1:
        fail("give --svhn folders, --validation-of or --training-of a detection build (one of the three)")
    if validation_of is not None:
        return f"the validation photos of {validation_of}"
    return f"the training photos of {training_of}" if training_of is not None else ", ".join(svhn)


def _labelled(svhn: tuple[str, ...], validation_of: Path | None, training_of: Path | None) -> list[Any]:
    """The labelled photos --svhn, --validation-of or --training-of names (DatasetError where unreadable)."""
    from digitloc.annotations.dataset.detection import build_photos
    from digitloc.benchmarks.numbers import labelled_photos

    if validation_of is not None:
        return build_photos(validation_of, "validation")
    if training_of is not None:
        return build_photos(training_of, "training")
    return labelled_photos(list(svhn))


def _refuse_existing(output: Path, stem: str, force: bool) -> None:
    """Stop before any measuring when STEM's report is already in ``output`` and --force is not given."""
    from digitloc.runtime.fileio import OutputExistsError, check_writable

    try:
        for suffix in (".json", ".md", ".png"):
            check_writable(output / f"{stem}{suffix}", force)
    except (OutputExistsError, OSError) as exc:
        fail(str(exc))


def _write(output: Path, stem: str, result: dict, markdown: str, force: bool) -> list[Path]:
    """STEM.json and STEM.md in ``output``; an existing one without --force ends the command in one line."""
    from digitloc.benchmarks.report import write_outputs

    try:
        return write_outputs(output, stem, result, markdown, force)
    except FileExistsError as exc:
        fail(str(exc))


def _report(output: Path, stem: str, result: dict, markdown: str, chart: Callable[[dict, Path], Path],
            force: bool) -> None:
    """STEM.json, STEM.md and STEM.png in ``output`` (refused without --force where they exist); the table echoed."""
    paths = _write(output, stem, result, markdown, force)
    paths.append(chart(result, output / f"{stem}.png"))
    click.echo(markdown)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@needs_extras("digitloc-bench", "train", "export")
@click.group()
def main() -> None:
    """Measure digitloc models: speed per provider and batch, accuracy drift of each variant."""


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--keras", "keras_model", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Time the Keras original of the first MODEL on the same inputs too.")
@click.option("--providers", default="cpu", show_default=True,
              help=f"Comma list of {', '.join(LATENCY_PROVIDERS)} (openvino: OpenVINO's own runtime, extra `openvino`); "
                   "timed interleaved, call by call.")
@batches_option("1,8,32")
@threads_option
@spin_option
@warmup_option
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed calls per configuration.")
@click.option("--refine-photos", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="A folder of real photos: also time the first MODEL through the runtime's Detector on them, with "
                   "and without --refine, in turn.")
@output_option(default=Path("bench-out"), help="Folder for latency.json, latency.md and latency.png.")
@force_option
def latency(models: tuple[Path, ...], keras_model: Path | None, providers: str, batches: list[int], threads: int | None,
            spin: bool, warmup: int, runs: int, refine_photos: Path | None, output: Path, force: bool) -> None:
    """Time MODELS (ONNX) for every provider x batch size; p50/p90/p99/mean/min, images/s, GMAC/s. The
    providers of one model and batch size are timed in alternating turns, so that they see the same machine."""
    from digitloc.benchmarks.latency import matmul_gmacs, time_keras, time_onnx, time_refine
    from digitloc.benchmarks.macs import count_macs
    from digitloc.benchmarks.report import cpu_lines, environment, latency_chart, latency_markdown
    from digitloc.runtime.contract import parse_metadata
    from digitloc.runtime.progress import progress

    batch_sizes = batches
    provider_list = [p.strip() for p in providers.split(",") if p.strip()]
    if not set(provider_list) <= set(LATENCY_PROVIDERS):
        fail(f"unknown provider in {providers!r}: choose from {', '.join(LATENCY_PROVIDERS)}")
    from digitloc.runtime.detector import open_session

    sizes, precisions = {}, {}  # each model is timed at its own input size (128x64 and 64x64 may be compared)
    for m in models:
        try:
            session = open_session(m)
            info = parse_metadata(session.get_modelmeta().custom_metadata_map, str(m))
            sizes[m], precisions[m.name] = info.input_size, info.precision
        except Exception as exc:  # unreadable file or foreign model: one clear line
            fail(f"{m}: {exc}")
    rng = np.random.default_rng(0)
    inputs = {size: rng.integers(0, 256, (max(batch_sizes), *size, 3), dtype=np.uint8) for size in set(sizes.values())}
    rows, errors = [], []
    jobs = [(m, b) for m in models for b in batch_sizes]
    macs: dict[Path, float | None] = {}
    for m in models:
        try:
            macs[m] = count_macs(m)
        except ValueError as exc:  # timed all the same; its GMAC/s column stays empty
            click.echo(f"warning: {exc}: no GMAC/s for it", err=True)
            macs[m] = None
    bar = progress(total=len(jobs) + (len(batch_sizes) if keras_model else 0), desc="latency", unit="config")
    for model, batch in jobs:
        timed, failed = time_onnx(model, provider_list, batch, inputs[sizes[model]], warmup, runs, threads,
                                  macs[model], spin)
        rows += [t.to_dict() for t in timed]
        for line in failed:
            errors.append(line)
            click.echo(f"error: {line}", err=True)
        bar.update(1)
    if keras_model:
        for batch in batch_sizes:
            rows.append(time_keras(keras_model, batch, inputs[sizes[models[0]]], warmup, runs).to_dict())
            bar.update(1)
    bar.close()
    refine_ratios = []
    if refine_photos is not None:
        photos = _photos(refine_photos)
        for batch in batch_sizes:
            plain, refined = (t.to_dict() for t in time_refine(models[0], photos, batch, warmup, runs, threads,
                                                                spin))
            rows += [plain, refined]
            refine_ratios.append(f"{models[0].name} through Detector at batch {batch}: --refine costs "
                                 f"{plain['images_per_s'] / refined['images_per_s']:.2f}x the time "
                                 f"({refined['images_per_s']:.0f} against {plain['images_per_s']:.0f} images/s)")
    peak = matmul_gmacs()
    payload = {"command": _command("latency"),
               "environment": environment(), "inputs": "random uint8 images (timing does not depend on content)",
               "macs_per_image": {m.name: macs[m] for m in models}, "matmul_gmacs_per_s": peak, "rows": rows,
               "errors": errors, "spin": spin}
    ratios = _ratios([r for r in rows if "detector" not in r["provider"]], {m.name: macs[m] for m in models},
                     precisions)
    ratios += refine_ratios
    payload["ratios"] = ratios
    md = (cpu_lines(payload) + f"onnxruntime sessions: threads {threads or 'all cores'}, "
          f"{'spinning' if spin else 'no spinning'} between calls (the runtime's default: no spinning)\n\n"
          + latency_markdown(rows) + f"\nfloat32 matrix product peak on this machine: {peak:.1f} GMAC/s\n")
    md += "".join(f"\n- {line}" for line in ratios) + "\n"
    paths = _write(output, "latency", payload, md, force)
    if rows:
        paths.append(latency_chart(rows, output / "latency.png"))
    else:
        click.echo("no chart: no configuration could be timed", err=True)
    click.echo(md)
    click.echo("wrote " + ", ".join(str(p) for p in paths))
    if errors:
        sys.exit(1)


def _photos(folder: Path) -> list[np.ndarray]:
    """The readable photos of a folder (for timings on real photo sizes)."""
    from digitloc.runtime.imageio import ImageError, read_image_file
    from digitloc.runtime.sources import IMAGE_EXTS

    photos = []
    for f in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        try:
            photos.append(read_image_file(f))
        except ImageError:
            continue
    if not photos:
        fail(f"{folder}: holds no readable photo")
    return photos


def _ratios(rows: list[dict], macs: dict[str, float], precisions: dict[str, str]) -> list[str]:
    """Speed-ups a reader looks for, per batch: each variant against the fp32 model (by its metadata's
    precision) of its own architecture (same MACs per image), and the Keras model against the variants of the first
    ONNX model's architecture (``--keras`` is that model's Keras original)."""
    from digitloc.export.quantize import Fp32Config

    out = []
    by = {(r["model"], r["provider"], r["batch"]): r for r in rows}
    onnx_models = list(dict.fromkeys(m for m, p, _ in by if p != "keras-tf-cpu"))
    fp32 = {(macs.get(m), p, b): r for (m, p, b), r in by.items() if precisions.get(m) == Fp32Config.name}
    keras = {b: r for (m, p, b), r in by.items() if p == "keras-tf-cpu"}
    keras_family = macs.get(onnx_models[0]) if onnx_models else None
    for (model, provider, batch), r in sorted(by.items()):
        if provider == "keras-tf-cpu":
            continue
        ort = by.get((model, "cpu", batch))
        if provider == OPENVINO and ort is not None:
            out.append(f"{model} at batch {batch}: OpenVINO {r['images_per_s'] / ort['images_per_s']:.2f}x "
                       f"onnxruntime's throughput ({r['images_per_s']:.0f} against {ort['images_per_s']:.0f} images/s)")
        if batch in keras and provider == "cpu" and macs.get(model) == keras_family:
            out.append(f"{model} ({provider}) vs Keras at batch {batch}: "
                       f"{keras[batch]['p50_ms'] / r['p50_ms']:.2f}x faster")
        ref = fp32.get((macs.get(model), provider, batch))
        if ref is not None and ref is not r:
            out.append(f"{model} vs {ref['model']} ({provider}) at batch {batch}: "
                       f"{r['images_per_s'] / ref['images_per_s']:.2f}x throughput")
    return out


@main.command()
@click.argument("keras_model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("onnx_models", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@data_option
@kind_option()
@output_option(default=Path("bench-out"), help="Folder for drift.json, drift.md and drift.png.")
@click.option("--latency", "latency_json", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A latency.json of these models: adds accuracy-latency.png (accuracy against CPU ms per image).")
@click.option("--emulate", type=click.Choice(sorted(EMULATED)), default=None,
              help="Run the ONNX models on an emulated CPU (qemu-user): avx2 = x86 without VNNI, arm64 = Cortex-A76 "
                   "(dotprod), arm64-a72 = NEON only, arm64-max = dotprod + i8mm. Keras runs natively.")
@click.option("--sysroot", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="ARM64 sysroot (default ~/.cache/digitloc/arm64; built on first use with apt-get and pip).")
@click.option("--outputs", "outputs_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The ONNX models' outputs computed on another machine (your device) by benchmarks/probe.py on the "
                   "inputs `digitloc-bench probe-inputs` wrote from the same --data: drift on that machine's CPU.")
@framing_option
@force_option
def drift(keras_model: Path, onnx_models: tuple[Path, ...], data: Path, kind: str, output: Path,
          latency_json: Path | None, emulate: str | None, sysroot: Path | None, outputs_file: Path | None,
          framing_dirs: tuple[str, ...], force: bool) -> None:
    """Accuracy of each ONNX variant against the ground truth, against KERAS_MODEL and against the fp32 variant.

    With --framing, also the framing evaluation of Keras, each variant and each variant with refine
    (natively): framing.json, framing.md and framing.png."""
    from digitloc.annotations.dataset.data import DatasetError, load_heldout
    from digitloc.benchmarks.drift import drift_table
    from digitloc.benchmarks.emulate import (
        DEFAULT_SYSROOT,
        TARGETS,
        EmulationError,
        load_probe_outputs,
        prepare_arm64,
        run_emulated,
    )
    from digitloc.benchmarks.report import accuracy_latency_chart, drift_chart, drift_markdown, environment

    if emulate and outputs_file:
        fail("--emulate and --outputs each say where the models ran: give one")
    if _is_detector_run(keras_model):
        if emulate or outputs_file or framing_dirs or latency_json:
            fail("for a detector, drift runs here on --data alone (no --emulate, --outputs, --framing or --latency)")
        _detector_drift(keras_model, onnx_models, data, output, force)
        return
    device = None
    try:
        latency_rows = _latency_rows(latency_json, onnx_models) if latency_json else None
        split = load_heldout(data, kind)
        predictions = None
        if outputs_file:
            predictions, device = load_probe_outputs(outputs_file, len(onnx_models), split.images)
        elif emulate:
            target = TARGETS[emulate]
            root = sysroot or DEFAULT_SYSROOT
            if target.arch == "aarch64":
                prepare_arm64(root)
            click.echo(f"running {len(onnx_models)} models on {target.description}: slow, results exact", err=True)
            predictions = run_emulated(target, list(onnx_models), split.images, root)
        result = drift_table(keras_model, list(onnx_models), split, predictions)
    except (DatasetError, ValueError, EmulationError) as exc:
        fail(str(exc))
    result["command"] = _command("drift")
    result["environment"] = environment()
    if emulate:
        result["emulated"] = TARGETS[emulate].description
        result["emulated_isa"] = list(TARGETS[emulate].isa)
    if device:
        result["device"] = device
    md = drift_markdown(result)
    paths = _write(output, "drift", result, md, force)
    paths.append(drift_chart(result, output / "drift.png"))
    if latency_rows:
        paths.append(accuracy_latency_chart(result, latency_rows, output / "accuracy-latency.png"))
    click.echo(md)
    if framing_dirs:
        paths += _framing(keras_model, onnx_models, framing_dirs, tuple(split.images.shape[1:3]), output, force)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


def _is_detector_run(keras_model: Path) -> bool:
    """Whether a Keras model's run folder says it is a detector (config.json's model kind), without loading it."""
    try:
        return json.loads((keras_model.parent / "config.json").read_text())["model"].get("kind") == "detector"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _detector_drift(keras_model: Path, onnx_models: tuple[Path, ...], data: Path, output: Path, force: bool) -> None:
    """Drift of a detector's variants on real photos letterboxed: a detection set's val.npz, or every
    photo of an SVHN-format folder (--data)."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.annotations.dataset.detection import load_detection, load_photos, photo_set
    from digitloc.benchmarks.drift import detector_drift_markdown, detector_drift_table
    from digitloc.benchmarks.report import cpu_lines, environment
    from digitloc.runtime.contract import parse_metadata
    from digitloc.runtime.detector import open_session

    try:
        size = parse_metadata(open_session(onnx_models[0]).get_modelmeta().custom_metadata_map,
                              str(onnx_models[0])).input_size
        if (data / "val.npz").is_file():
            split, source = load_detection(data / "val.npz"), f"{data / 'val.npz'}"
        else:
            split, source = photo_set(load_photos([str(data)], skip_held_out=False), size), f"every photo of {data}"
        result = detector_drift_table(keras_model, list(onnx_models), split["images"], split["boxes"], split["labels"])
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
    result.update(command=_command("drift"), environment=environment(), photos=source)
    md = cpu_lines(result) + f"Photos: {source}.\n\n" + detector_drift_markdown(result)
    paths = _write(output, "drift", result, md, force)
    click.echo(md)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@main.command("photos")
@click.argument("onnx_models", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@svhn_option()
@click.option("--held-out-only", is_flag=True,
              help="Only the one-digit photos a default digitloc-data build holds out (val and test).")
@validation_of_option
@training_of_option
@min_score_option
@one_line_option
@box_width_option
@provider_option(default="cpu")
@output_option(default=Path("bench-out"), help="Folder for photos.json, photos.md and the PNG charts.")
@force_option
def photos_command(onnx_models: tuple[Path, ...], svhn: tuple[str, ...], held_out_only: bool,
                   validation_of: Path | None, training_of: Path | None, min_score: float | None, one_line: bool,
                   box_width: float,
                   provider: str, output: Path, force: bool) -> None:
    """House numbers, digits and one-digit figures of ONNX_MODELS through the runtime on your own
    labelled photos, as they are.

    Every photo of the SVHN-format folders goes through the Detector: whole-number accuracy (the
    digits read left to right, an exact string), digit recall and precision (right class, IoU >=
    0.5), by the tallest digit's height share; photos-failures.png shows the first numbers read
    wrong, and a table says where the wrong numbers go wrong (digits missed, misread, boxed loosely,
    added). With --svhn, the one-digit photos among them also get the one-digit table (one pass and
    with refine, by the digit's height share, where missed boxes lie); --validation-of reads a
    detection build's validation photos instead, --training-of the photos its samples were composed from
    (beside the validation figures: how far the model fits what it was trained on). With more than one
    model, a table says on how many photos each reads the same number as the first (an int8 file against
    its fp32 file), on the engine --provider picks (onnxruntime by default; openvino or auto to measure
    what a user's CPU runs). Needs no TensorFlow."""
    from digitloc.annotations.dataset.data import SPLITS, DatasetError, held_out_photos, reframe_photos
    from digitloc.benchmarks.framing import photos_chart, photos_markdown, photos_table
    from digitloc.benchmarks.numbers import (
        failure_sheet,
        labelled_photos,
        numbers_chart,
        numbers_markdown,
        numbers_table,
    )
    from digitloc.benchmarks.report import cpu_lines, environment

    source = _photo_source(svhn, validation_of, training_of)
    if held_out_only and not svhn:
        fail("--held-out-only picks among --svhn photos: it does not go with --validation-of or --training-of")
    split = ("val", "test") if held_out_only else SPLITS
    rows: list = []
    one_digit: list = []
    try:
        if not svhn:
            photos = _labelled(svhn, validation_of, training_of)
        else:
            try:
                one_digit = reframe_photos(held_out_photos(list(svhn), split), as_is=True)
            except DatasetError:  # folders without one-digit photos: the numbers alone
                one_digit = []
            if one_digit:
                rows = photos_table(list(onnx_models), one_digit)
            photos = labelled_photos(list(svhn))
            if held_out_only:
                held = {p.origin for p in one_digit}
                photos = [p for p in photos if p.origin in held]
        numbers, shown = numbers_table(list(onnx_models), photos, min_score, provider, one_line, box_width)
    except (DatasetError, ProviderError) as exc:
        fail(str(exc))
    payload = {"command": _command("photos"), "environment": environment(), "source": source, "photos": len(photos),
               "provider": provider, "one_line": one_line, "box_width": box_width, "numbers": numbers,
               "one_digit_photos": len(one_digit), "rows": rows}
    engines = ", ".join(dict.fromkeys(r["engine"] for r in numbers))
    markdown = (cpu_lines(payload) + f"Photos: {source}. Engine: --provider {provider} ({engines}). "
                f"{'One line' if one_line else 'Every line (--all-lines)'}. Detectors' boxes widened x{box_width:g}.\n\n"
                "## House numbers\n\n" + numbers_markdown(numbers))
    if rows:
        markdown += "\n## One-digit photos (the most confident digit), one pass and with refine\n\n" + photos_markdown(rows)
    paths = _write(output, "photos", payload, markdown, force)
    paths.append(numbers_chart(numbers, output / "photos-numbers.png"))
    paths.append(failure_sheet(photos, shown, numbers, output / "photos-failures.png"))
    if rows:
        paths.append(photos_chart(rows, output / "photos.png"))
    click.echo(markdown)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@main.command("misses")
@click.argument("onnx_model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@svhn_option()
@validation_of_option
@training_of_option
@click.option("--widths", default="1,1.05,1.1,1.15", show_default=True,
              help="Box width factors (0.5-2, comma-separated) at which digit recall is scored.")
@provider_option(default="cpu")
@output_option(default=Path("bench-out"), help="Folder for misses.json, misses.md and misses-loose.png.")
@force_option
def misses_command(onnx_model: Path, svhn: tuple[str, ...], validation_of: Path | None, training_of: Path | None,
                   widths: str, provider: str, output: Path, force: bool) -> None:
    """Where a detector's misses are, on your labelled photos (SVHN-format folders or a build's validation or
    training photos).

    Each photo is read as shipped (refine on), with the model's own boxes. Every true digit is right, misread
    or missed; the tables break them down by the digit's height in the photo's pixels, say how far the
    missed digits' nearest boxes overlap them (a loose box is not a missed digit), compare the boxes read
    with the folder's own boxes (SVHN's train and test splits box differently), score digit recall at
    each --widths factor and compare the scores of digits read over a true digit with those read over
    none. misses-loose.png draws the photos whose missed digit a box overlaps at IoU 0.3-0.5 (the
    folder's boxes green, the boxes read red). Choose on validation photos, never on a test split.
    Needs no TensorFlow."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.benchmarks.misses import analyse, loose_sheet, misses_markdown
    from digitloc.benchmarks.numbers import read_photos
    from digitloc.benchmarks.report import cpu_lines, environment
    from digitloc.runtime.contract import ContractError
    from digitloc.runtime.detector import Detector
    from digitloc.runtime.number import BOX_WIDTH_RANGE

    source = _photo_source(svhn, validation_of, training_of)
    try:
        factors = [float(v) for v in widths.split(",") if v.strip()]
    except ValueError:
        factors = []
    low, high = BOX_WIDTH_RANGE
    if not factors or not all(low <= f <= high for f in factors):
        fail(f"--widths {widths!r}: give factors within {low:g}..{high:g}, separated by commas")
    _refuse_existing(output, "misses", force)
    try:
        photos = _labelled(svhn, validation_of, training_of)
        detector = Detector(onnx_model, provider=provider, box_width=1.0)
    except (DatasetError, ContractError, ProviderError) as exc:
        fail(str(exc))
    if not detector.is_detector:
        fail(f"{onnx_model}: not a detector (contract version 2): it reads one digit")
    if not photos:
        fail(f"{source}: no labelled photo to read")
    results, detections = read_photos(detector, photos)
    figures = analyse(photos, results, detections, factors)
    payload = {"command": _command("misses"), "environment": environment(), "model": onnx_model.name,
               "source": source, "photos": len(photos), "engine": detector.provider, **figures}
    markdown = (cpu_lines(payload) + f"Model: {onnx_model.name}. Photos: {source}. Engine: --provider {provider} "
                f"({detector.provider}).\n\n" + misses_markdown(figures))
    paths = _write(output, "misses", payload, markdown, force)
    sheet = output / "misses-loose.png"
    if loose_sheet(photos, results, sheet):
        paths.append(sheet)
    else:  # no such photo now: a sheet left by an earlier run would say otherwise
        sheet.unlink(missing_ok=True)
    click.echo(markdown)
    click.echo("wrote " + ", ".join(str(p) for p in paths))


@main.command("probe-inputs")
@data_option
@kind_option()
@output_option(help="The .npz of model inputs for benchmarks/probe.py.", required=True, folder=False)
@force_option
def probe_inputs(data: Path, kind: str, output: Path, force: bool) -> None:
    """Write the held-out inputs for benchmarks/probe.py, to run the models on another machine.

    There: python probe.py INPUTS OUT.npz fp32.onnx int8.onnx (numpy and onnxruntime only); back
    here: digitloc-bench drift KERAS fp32.onnx int8.onnx --data DATA --outputs OUT.npz."""
    from digitloc.annotations.dataset.data import DatasetError, load_heldout
    from digitloc.runtime.fileio import atomic_path, check_writable

    try:
        check_writable(output, force)
        split = load_heldout(data, kind)
        with atomic_path(output, suffix=".npz") as tmp:
            np.savez_compressed(tmp, images=split.images)
    except (DatasetError, FileExistsError, OSError) as exc:
        fail(str(exc))
    click.echo(f"wrote {output}: {len(split)} images")


def _framing(keras_model: Path, onnx_models: tuple[Path, ...], framing_dirs: tuple[str, ...], size: tuple[int, int],
             output: Path, force: bool) -> list[Path]:
    from digitloc.annotations.charts import framing_chart
    from digitloc.annotations.dataset.data import DatasetError, held_out_photos, one_digit_split_of, reframe_photos
    from digitloc.benchmarks.framing import as_is_markdown, as_is_table, framing_markdown, framing_table
    from digitloc.benchmarks.report import cpu_lines, environment

    try:
        held = held_out_photos(list(framing_dirs))  # scanned once for both tables
        results = framing_table(keras_model, list(onnx_models), reframe_photos(held), size)
        photos = reframe_photos(held, as_is=True)
        test = np.array([one_digit_split_of(f.origin) == "test" for f in photos])
        as_is = as_is_table(list(onnx_models), photos, test)
    except DatasetError as exc:
        fail(str(exc))
    payload = {"command": _command("drift"),
               "environment": environment(), "fill": "the photo itself, beyond it its edge blurred", "results": results,
               "as_is": as_is}
    md = cpu_lines(payload) + framing_markdown(results) + as_is_markdown(as_is)
    paths = _write(output, "framing", payload, md, force)
    click.echo(md)
    return [*paths, framing_chart(results, output / "framing.png")]


def _latency_rows(path: Path, onnx_models: tuple[Path, ...]) -> list[dict]:
    """The CPU rows of a latency.json; every model of the drift run must be in it."""
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a latency.json written by digitloc-bench latency ({exc})") from exc
    timed = {r["model"] for r in rows if r.get("provider") == "cpu"}
    missing = [m.name for m in onnx_models if m.name not in timed]
    if missing:
        raise ValueError(f"{path}: holds no CPU timings of {', '.join(missing)}")
    return rows


@main.command()
@click.argument("keras_model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--int8", "int8_model", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The int8 ONNX file of KERAS_MODEL (onnxruntime and OpenVINO run it).")
@click.option("--fp32", "fp32_model", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The fp32 ONNX file of KERAS_MODEL.")
@data_option
@kind_option()
@click.option("--runtimes", default="onnxruntime,auto,openvino,litert", show_default=True,
              help="Runtimes to time: onnxruntime (the runtime on onnxruntime alone, --provider cpu), auto (the "
                   "runtime's default read: on a CPU, onnxruntime or OpenVINO by its own probe), openvino, litert.")
@click.option("--agreement-data", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="More real photos the model never trained on, for agreement beside the held-out ones: a dataset "
                   "folder (its val and test, every kind), e.g. built from svhn-test-sample/fit (repeatable).")
@batches_option("1,32")
@threads_option
@repeats_option
@click.option("--calls", default=20, show_default=True, help="Timed calls per configuration per repetition.")
@warmup_option
@click.option("--litert-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the converted .tflite files are kept (default: OUTPUT/litert).")
@output_option(default=Path("bench-out"), help="Folder for compare.json, compare.md and compare.png.")
@force_option
def compare(keras_model: Path, int8_model: Path, fp32_model: Path, data: Path, kind: str, runtimes: str,
            agreement_data: tuple[Path, ...], batches: list[int],
            threads: int | None, repeats: int, calls: int, warmup: int, litert_dir: Path | None, output: Path,
            force: bool) -> None:
    """The same model through onnxruntime (ours), OpenVINO and LiteRT, int8 and fp32, timed interleaved.

    The data's train crops calibrate LiteRT's int8; its held-out photos (--kind) check agreement; each
    repetition times every configuration in turn (round robin). OpenVINO and LiteRT come with the `peers`
    extra (pip install 'digitloc[peers]')."""
    from digitloc.annotations.dataset.data import DatasetError, load_heldout
    from digitloc.annotations.dataset.images import load_images
    from digitloc.benchmarks import compare as cmp
    from digitloc.benchmarks.report import environment

    names = [r.strip() for r in runtimes.split(",") if r.strip()]
    if not set(names) <= set(cmp.RUNTIMES):
        fail(f"unknown runtime in {runtimes!r}: choose from {', '.join(cmp.RUNTIMES)}")
    _refuse_existing(output, "compare", force)
    batch_sizes = batches
    try:
        heldout = load_heldout(data, kind)
        size = heldout.images.shape[1:3]
        extra = [load_heldout(folder, "all") for folder in agreement_data]
    except DatasetError as exc:
        fail(str(exc))
    for folder, part in zip(agreement_data, extra, strict=True):
        if part.images.shape[1:3] != size:
            fail(f"{folder}: its photos are {part.images.shape[2]}x{part.images.shape[1]}, "
                 f"the data's {size[1]}x{size[0]}")
    files: dict[tuple[str, str], Path] = {}
    for rt in names:
        if rt == "litert":
            calib = load_images(str(data), size, "train", 256)
            tfl = cmp.convert_litert(keras_model, litert_dir or output / "litert", calib)
            files[(rt, "fp32")], files[(rt, "int8")] = tfl["fp32"], tfl["int8"]
        else:
            files[(rt, "fp32")], files[(rt, "int8")] = fp32_model, int8_model
    makers = {"onnxruntime": cmp.ort_runner, cmp.AUTO: cmp.auto_runner, "openvino": cmp.openvino_runner,
              "litert": cmp.litert_runner}
    runners = {}
    for (rt, precision), path in files.items():
        for b in batch_sizes:
            try:
                runners[cmp.Config(rt, precision, b)] = makers[rt](path, b, threads)
            except ImportError as exc:
                fail(f"{rt} is not installed ({exc}): pip install 'digitloc[peers]'")
    rng = np.random.default_rng(0)
    inputs = {b: rng.integers(0, 256, (b, *size, 3), dtype=np.uint8) for b in batch_sizes}
    click.echo(f"timing {len(runners)} configurations, {repeats} x {calls} calls each, round-robin", err=True)
    with cmp.fresh_probe_cache():  # auto probes afresh in this run, never from an older cache
        rates = cmp.interleaved(runners, inputs, repeats, calls, warmup)
    rows = cmp.summarize(rates)
    reference = makers["onnxruntime"](fp32_model, 1, threads)
    # Every runner reads the held-out photos and those of --agreement-data once; figures for both parts.
    images = np.concatenate([heldout.images, *(p.images for p in extra)])
    labels = np.concatenate([heldout.labels, *(p.labels for p in extra)])
    parts = {"agreement": slice(0, len(heldout)), **({"agreement_all": slice(None)} if extra else {})}
    result = {"command": _command("compare"),
              "environment": environment(), "repeats": repeats, "calls": calls, "threads": threads,
              "files": {f"{rt} {p}": str(path) for (rt, p), path in files.items()}, "rows": rows,
              "ratios": cmp.ratios(rows), "auto_choices": cmp.auto_choices(), "agreement_samples": len(heldout),
              **cmp.agreement(runners, images, cmp.run_all(reference, images, 1), labels, parts)}
    if extra:
        result.update(agreement_data=[str(f) for f in agreement_data], agreement_all_samples=len(images))
    _report(output, "compare", result, cmp.compare_markdown(result), cmp.compare_chart, force)


@main.command()
@click.argument("compare_json", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@model_option()
@threads_option
@output_option(default=Path("bench-out"), help="Folder for ceiling.json, ceiling.md and ceiling.png.")
@force_option
def ceiling(compare_json: Path, model: str | None, threads: int | None, output: Path, force: bool) -> None:
    """This CPU's int8 multiply-add ceilings beside the int8 rates of a `digitloc-bench compare` run.

    Measures the instruction peak (the widest int8 dot-product instruction, one thread per logical
    CPU, built with the C compiler $CC or cc) and onnxruntime's own int8 matrix product, then says what
    share of them each runtime reaches and whether the speed target (ours at least OpenVINO's int8
    rate and 1.5x LiteRT's) asks for more multiply-adds per second than the CPU can do. --model: the int8
    ONNX file the compare run timed (its MACs per image turn images/s into GMAC/s); threads by default
    one per logical CPU this process may use."""
    from digitloc.benchmarks import ceiling as cl
    from digitloc.benchmarks.macs import count_macs
    from digitloc.benchmarks.report import environment
    from digitloc.runtime.cpuinfo import cpu_features

    try:
        compare_result = json.loads(compare_json.read_text())
        compare_cpu = compare_result["environment"]["cpu_summary"]
        int8 = cl.int8_rates(compare_result)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"{compare_json}: not a digitloc-bench compare result ({type(exc).__name__}: {exc})")
    if not int8:
        fail(f"{compare_json}: no int8 rows to set against the ceilings")
    _refuse_existing(output, "ceiling", force)
    threads = threads or min(256, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else os.cpu_count() or 1)
    model_path = _model_path(model)
    try:
        macs = count_macs(model_path)
    except ValueError as exc:
        fail(str(exc))
    features = cpu_features()
    probe, why = cl.pick_probe(set(features["isa"]), features["arch"])
    peak: dict = {"gmacs_per_s": None, "why": why}
    if probe is not None:
        click.echo(f"instruction peak: {probe.name}, {threads} threads", err=True)
        try:
            peak = cl.instruction_peak(probe, threads)
        except RuntimeError as exc:
            peak = {"gmacs_per_s": None, "why": str(exc)}
            click.echo(f"warning: {exc}", err=True)
    click.echo(f"onnxruntime MatMulInteger, {threads} threads", err=True)
    gemm = cl.gemm_peak(threads)
    result = {"command": _command("ceiling"), "environment": environment(), "compare_file": str(compare_json),
              "compare_cpu": compare_cpu, "model": str(model_path), "macs": macs, "instruction_peak": peak,
              "gemm_peak": gemm, **cl.ceiling_rows(int8, macs, peak["gmacs_per_s"], gemm["gmacs_per_s"])}
    _report(output, "ceiling", result, cl.ceiling_markdown(result), cl.ceiling_chart, force)


@main.command()
@model_option()
@provider_option(default="cpu")
@repeats_option
def startup(model: str | None, provider: str, repeats: int) -> None:
    """Import of digitloc.runtime plus session start, each repetition in a fresh Python process."""
    from digitloc.benchmarks.startup import measure_startup

    model = str(_model_path(model))
    try:
        result = measure_startup(model, provider, repeats)
    except Exception as exc:  # the child's error text is the message
        fail(f"startup probe failed: {getattr(exc, 'stderr', '') or exc}")
    click.echo(f"import {result['import_s'] * 1000:.0f} ms + session {result['session_s'] * 1000:.0f} ms = "
               f"{result['import_plus_session_s'] * 1000:.0f} ms (median of {repeats}), first prediction "
               f"{result['first_predict_s'] * 1000:.0f} ms on {result['provider']}; TensorFlow loaded: "
               f"{result['tensorflow_loaded']}")
