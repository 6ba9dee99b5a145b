"""Compare int8-static schemes by measurement: agreement, box IoU and accuracy against fp32,
natively and on emulated CPUs (benchmarks/emulate.py). Writes int8-schemes.json and .md.

    python scripts/int8_schemes.py models/digitloc-default-fp32.onnx --calib data/svhn128x64-small \
        --heldout data/svhn128x64-small --emulate avx2 -o benchmarks/results/int8-schemes
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import click

# name -> Int8StaticConfig fields (calibration added); every one per-channel unless said.
SCHEMES: dict[str, dict] = {
    "u8s8": {},
    "u8s8-rr": {"reduce_range": True},
    "s8s8-rr": {"activations": "int8", "reduce_range": True},
    "u8s8-conv1f": {"first_conv_float": True},
    "u8s8-rr-conv1f": {"reduce_range": True, "first_conv_float": True},
    "s8s8-rr-conv1f": {"activations": "int8", "reduce_range": True, "first_conv_float": True},
    "u8s8-rr-minmax": {"reduce_range": True, "method": "minmax"},
    "u8s8-rr-entropy": {"reduce_range": True, "method": "entropy"},
    "u8u8": {"weights": "uint8"},
}


@click.command()
@click.argument("fp32", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--calib", required=True, help="Dataset folder (train split, real crops) for calibration.")
@click.option("--calib-size", default=512, show_default=True)
@click.option("--heldout", required=True, type=click.Path(exists=True, path_type=Path),
              help="Dataset folder: its val+test real photos are scored.")
@click.option("--schemes", default=",".join(SCHEMES), show_default=True)
@click.option("--method", default="percentile", show_default=True, help="Calibration method unless a scheme says.")
@click.option("--emulate", default="avx2", show_default=True, help="Comma list of emulated targets ('' for none).")
@click.option("--sysroot", type=click.Path(path_type=Path), default=None, help="ARM64 sysroot (benchmarks/emulate.py).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(fp32: Path, calib: str, calib_size: int, heldout: Path, schemes: str, method: str, emulate: str,
         sysroot: Path | None, output: Path) -> None:
    from digitloc.annotations.dataset.data import load_heldout
    from digitloc.annotations.dataset.images import load_images
    from digitloc.annotations.metrics import agreement as compare
    from digitloc.annotations.metrics import evaluate_predictions
    from digitloc.benchmarks.emulate import DEFAULT_SYSROOT, TARGETS, run_emulated
    from digitloc.export.parity import onnx_predict
    from digitloc.export.quantize import Int8StaticConfig, quantize
    from digitloc.runtime.cpuinfo import cpu_report

    output.mkdir(parents=True, exist_ok=True)
    data = load_heldout(heldout)
    size = data.images.shape[1:3]
    calibration = load_images(calib, size, "train", calib_size)
    names = [s for s in schemes.split(",") if s]
    paths = {"fp32": fp32}
    for name in names:
        path = output / f"{name}.onnx"
        t = time.time()
        quantize(fp32, path, Int8StaticConfig(calibration=calibration, **{"method": method, **SCHEMES[name]}))
        click.echo(f"{name}: quantized in {time.time() - t:.0f} s", err=True)
        paths[name] = path
    cpus = {"native": None, **{t: TARGETS[t] for t in emulate.split(",") if t}}
    rows = []
    for cpu, target in cpus.items():
        t = time.time()
        if target is None:
            preds = [onnx_predict(p, data.images) for p in paths.values()]
        else:
            preds = run_emulated(target, list(paths.values()), data.images, sysroot or DEFAULT_SYSROOT)
        click.echo(f"{cpu}: ran {len(paths)} models in {time.time() - t:.0f} s", err=True)
        ref = preds[0]
        for name, pred in zip(paths, preds, strict=True):
            truth = evaluate_predictions(data.boxes, data.labels, pred[0], pred[1])
            vs = compare(ref, pred)
            rows.append({"cpu": cpu, "scheme": name, "class_agreement": vs["class_agreement"],
                         "box_iou_mean": vs["box_iou_mean"], "box_iou_min": vs["box_iou_min"],
                         "digit_max_abs_diff": vs["digit_max_abs_diff"], "class_accuracy": truth["class_accuracy"],
                         "mean_iou": truth["mean_iou"], "size_bytes": paths[name].stat().st_size})
    result = {"command": "python scripts/int8_schemes.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "samples": len(data), "calibration_images": len(calibration), "environment": cpu_report(),
              "emulated": {k: v.description for k, v in cpus.items() if v is not None}, "schemes": SCHEMES, "rows": rows}
    (output / "int8-schemes.json").write_text(json.dumps(result, indent=1))
    md = (f"Command: `{result['command']}`\n\nNative CPU: {result['environment']['summary']}\n\n"
          + "".join(f"- {k}: {v}\n" for k, v in result["emulated"].items())
          + f"\n{len(data)} real held-out photos; agreement and box IoU against fp32 on the same CPU.\n\n"
          "| CPU | scheme | class agreement | box IoU mean | box IoU min | accuracy | truth IoU |\n"
          "|---|---|---|---|---|---|---|\n")
    md += "".join(f"| {r['cpu']} | {r['scheme']} | {r['class_agreement']:.4f} | {r['box_iou_mean']:.4f} "
                  f"| {r['box_iou_min']:.3f} | {r['class_accuracy']:.4f} | {r['mean_iou']:.4f} |\n" for r in rows)
    (output / "int8-schemes.md").write_text(md)
    click.echo(md)


if __name__ == "__main__":
    main()
