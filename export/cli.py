"""digitloc-export: a trained Keras model to ONNX, quantized on demand, checked before it is trusted."""

from __future__ import annotations

from pathlib import Path

import click

from digitloc.export.quantize import CONFIGS, PRECISIONS, Int8StaticConfig
from digitloc.runtime.options import fail, force_option, needs_extras, output_option


@needs_extras("digitloc-export", "train", "export")
@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@output_option(help="The .onnx file to write (its parity report beside it, .parity.json).", required=True, folder=False)
@click.option("--opset", default=17, show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
              show_default=True)
@click.option("--calib", default=None, help="Dataset folder (train split) or image folder for int8-static calibration.")
@click.option("--calib-size", default=512, show_default=True, help="Calibration images.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default=None,
              help="int8-static calibration (default: minmax for one-digit models, percentile for detectors, each "
                   "chosen by measured agreement with fp32).")
@click.option("--activations", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True,
              help="int8-static activation type: uint8 (U8S8) runs faster on x86 VNNI than int8 (S8S8).")
@click.option("--reduce-range/--full-range", default=None,
              help="int8-static: 7-bit weights (default: the int8-static config's choice).")
@click.option("--first-conv-float/--first-conv-int8", default=None,
              help="int8-static: keep the first convolution in float (default: the config's choice).")
@click.option("--parity-data", default=None,
              help="Dataset folder (val split, with digits) or image folder (default: --calib, else the run's own "
                   "val photos).")
@click.option("--parity-random", is_flag=True, help="Allow the parity check on random noise when no photos are found.")
@click.option("--parity-size", default=256, show_default=True, help="Images in the parity check.")
@click.option("--min-agreement", type=float, default=None,
              help="Least class agreement with Keras (a detector: the same number read; default per precision).")
@click.option("--min-box-iou", type=float, default=None, help="Least mean box IoU with Keras (default per precision).")
@click.option("--max-accuracy-drop", type=float, default=None,
              help="Largest accuracy drop below Keras on labelled photos, as a fraction (default per precision).")
@click.option("--max-abs-diff", type=float, default=None, help="Largest fp32 output difference from Keras.")
@click.option("--simplify", is_flag=True, help="Fold constants with ONNX Runtime's basic optimizer.")
@click.option("--triton-repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a Triton model repository here.")
@force_option
def main(model: Path, output: Path, opset: int, precision: str, calib: str | None, calib_size: int, calib_method: str | None,
         activations: str, reduce_range: bool | None, first_conv_float: bool | None, parity_data: str | None,
         parity_random: bool, parity_size: int, min_agreement: float | None, min_box_iou: float | None,
         max_accuracy_drop: float | None, max_abs_diff: float | None, simplify: bool, triton_repo: Path | None,
         force: bool) -> None:
    """Export MODEL (.keras) to ONNX at the chosen precision, then check parity with Keras."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.annotations.dataset.images import load_images, load_labelled
    from digitloc.export.api import ExportConfig, export_model, load_keras
    from digitloc.export.convert import check_two_head, is_detector
    from digitloc.export.errors import ExportError
    from digitloc.runtime.fileio import OutputDirError, OutputExistsError, OutputRefusedError, OutputRule, prepare_output_dir

    try:
        if not model.is_file():
            raise ExportError(f"{model}: no such file")
        OutputRule(models=[model]).claim(output, force)  # never over the model being read, a link or a device
        prepare_output_dir(output.parent)  # a folder that cannot be written (/proc, under a file): one line, now
        if triton_repo is not None:  # checked before anything is written: never half done
            from digitloc.export.triton import check_repository

            check_repository(triton_repo, output.stem.replace(" ", "_"), force)
        keras_model = load_keras(model)
        size = check_two_head(keras_model, str(model))
        if is_detector(keras_model):
            if max_accuracy_drop is not None or max_abs_diff is not None:
                raise ExportError(f"{model}: a detector's gate is --min-agreement (the same number read) and "
                                  "--min-box-iou; --max-accuracy-drop and --max-abs-diff are one-digit models' bounds")
            report = _export_detector(model, keras_model, size, output, precision, calib, calib_size, calib_method,
                                      parity_data, parity_size, opset, force, min_agreement, min_box_iou)
        else:
            if precision == Int8StaticConfig.name:
                if not calib:
                    raise ExportError("int8-static needs --calib: real images to calibrate on (never random noise)")
                choices = {"reduce_range": reduce_range, "first_conv_float": first_conv_float}
                quant = Int8StaticConfig(calibration=load_images(calib, size, "train", calib_size),
                                         method=calib_method or "minmax",
                                         activations=activations, **{k: v for k, v in choices.items() if v is not None})
            else:
                quant = CONFIGS[precision]()
            parity_source = parity_data or calib
            parity, labels = (load_labelled(parity_source, size, "val", parity_size, seed=1) if parity_source
                              else (None, None))
            cfg = ExportConfig(output=output, quant=quant, opset=opset, simplify=simplify, parity_images=parity,
                               parity_labels=labels, parity_random=parity_random, parity_size=parity_size,
                               max_abs_diff=max_abs_diff, min_agreement=min_agreement, min_box_iou=min_box_iou,
                               max_accuracy_drop=max_accuracy_drop, force=force)
            report = export_model(model, cfg, keras_model)
        if triton_repo is not None:
            from digitloc.export.triton import write_repository

            name = output.stem.replace(" ", "_")
            folder = write_repository(output, triton_repo, name, force=force)
            click.echo(f"wrote Triton repository {folder}")
    except (ExportError, DatasetError, OutputExistsError, OutputRefusedError, OutputDirError, ValueError) as exc:
        fail(str(exc))
    if "number_agreement" in report:
        click.echo(f"wrote {output} ({report['size_bytes'] / 1e6:.2f} MB, {precision}); parity on {report['samples']} "
                   f"{report['parity_inputs']}: same number read {report['number_agreement']:.4f}, matched box IoU "
                   f"{report['box_iou_mean']:.4f} at threshold {report['min_score']:g}; on {report['cpu']['summary']}")
        return
    acc = ("" if report.get("accuracy") is None else
           f", accuracy {report['accuracy']:.4f} (Keras {report['keras_accuracy']:.4f})")
    click.echo(f"wrote {output} ({report['size_bytes'] / 1e6:.2f} MB, {precision}); parity on {report['samples']} "
               f"{report['parity_inputs']}: max abs diff {report['max_abs_diff']:.3g}, class agreement "
               f"{report['class_agreement']:.4f}, box IoU {report['box_iou_mean']:.4f}{acc}; on {report['cpu']['summary']}")
    if report.get("warning"):
        click.echo(report["warning"], err=True)


def _export_detector(model: Path, keras_model: object, size: tuple[int, int], output: Path, precision: str,
                     calib: str | None, calib_size: int, calib_method: str | None, parity_data: str | None, parity_size: int,
                     opset: int, force: bool, min_agreement: float | None = None,
                     min_box_iou: float | None = None) -> dict:
    """A detector's export: calibration on the detection dataset's composed samples, the gate on its
    validation photos (both letterboxed, as the runtime feeds them); --min-agreement and --min-box-iou
    replace the gate's bounds."""
    from digitloc.export.detector import DETECTOR_CALIBRATION, export_detector, gate_limits, parity_photos

    if precision == Int8StaticConfig.name:
        images = parity_photos(calib, model, size, calib_size, split="train")[0]
        quant = Int8StaticConfig(calibration=images, method=calib_method or DETECTOR_CALIBRATION)
    else:
        quant = CONFIGS[precision]()
    parity, source = parity_photos(parity_data or calib, model, size, parity_size)
    return export_detector(model, keras_model, output, quant, parity, source, opset, force,
                           gate_limits(quant.name, min_agreement, min_box_iou))
