"""Compare int8-static schemes of a detector by measurement: the number read and the matched box IoU
against its fp32 file, through onnxruntime (CPU) and OpenVINO, on real photos letterboxed: a detection
build's validation photos and any SVHN folders given (e.g. svhn-test-sample/fit, framed like eval).
Writes schemes.json and schemes.md.

    python scripts/int8_detector_schemes.py models/digitloc-detector-fp32.onnx --calib data/det192x96-d \
        --svhn ../shared/data/svhn-test-sample/fit -o benchmarks/results/detector/int8-schemes

Never pass svhn-test-sample/eval: a scheme is chosen on these photos.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

# name -> (Int8StaticConfig fields, convolutions kept in float besides the detector's own float nodes)
SCHEMES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "shipped": ({}, ()),
    "stem-float": ({}, ("stem",)),
    "neck-float": ({}, ("neck",)),
    "stem-neck-float": ({}, ("stem", "neck")),
    "u8u8": ({"weights": "uint8", "reduce_range": False}, ()),
    "s8s8": ({"activations": "int8"}, ()),
    "minmax": ({"method": "minmax"}, ()),
}


def float_convs(proto: Any, parts: tuple[str, ...]) -> list[str]:
    """The Conv nodes a scheme keeps in float, found by structure (tf2onnx renames the BN-fused
    convolutions): ``stem`` the first convolution, ``neck`` those fed by a node of the neck."""
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    made_by = {out: n.name for n in proto.graph.node for out in n.output}
    names = [convs[0].name] if "stem" in parts else []
    if "neck" in parts:
        names += [c.name for c in convs if "neck" in made_by.get(c.input[0], "") and "neck" not in c.name]
    return names


@click.command()
@click.argument("fp32", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--calib", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Detection build: calibration from its composed train samples, photos from its val.npz.")
@click.option("--calib-size", default=1024, show_default=True)
@click.option("--svhn", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="SVHN folder whose photos are scored too (repeatable; never svhn-test-sample/eval).")
@click.option("--schemes", default=",".join(SCHEMES), show_default=True)
@click.option("--min-score", type=float, default=None, help="Threshold (default: the fp32 file's own).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(fp32: Path, calib: Path, calib_size: int, svhn: tuple[str, ...], schemes: str, min_score: float | None,
         output: Path) -> None:
    """Quantize FP32 once per scheme and score each variant against FP32 on each engine."""
    import onnx

    from digitloc.annotations.dataset.detection import load_detection, load_photos, photo_set
    from digitloc.export.detector import compare_detections, float_nodes, onnx_detections
    from digitloc.export.quantize import Int8StaticConfig, quantize
    from digitloc.runtime.contract import META_MIN_SCORE
    from digitloc.runtime.cpuinfo import cpu_report
    from digitloc.runtime.number import DEFAULT_MIN_SCORE
    names = [s for s in schemes.split(",") if s]
    unknown = [s for s in names if s not in SCHEMES]
    if unknown:
        raise click.BadParameter(f"unknown scheme(s) {', '.join(unknown)}; choose from {', '.join(SCHEMES)}")
    if any(Path(s).name == "eval" for s in svhn):
        raise click.BadParameter("svhn-test-sample/eval is measured only, never used to choose a scheme")
    output.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(fp32))
    meta = {p.key: p.value for p in proto.metadata_props}
    threshold = min_score if min_score is not None else float(meta.get(META_MIN_SCORE, DEFAULT_MIN_SCORE))
    val = load_detection(calib / "val.npz")["images"]
    size = val.shape[1:3]
    images = np.concatenate([val] + [photo_set(load_photos(list(svhn)), size)["images"]] if svhn else [val])
    train = load_detection(calib / "train.npz")["images"]
    calibration = train[np.sort(np.random.default_rng(1).permutation(len(train))[:calib_size])]
    del train
    engines = ("cpu", "openvino")
    reference = {e: onnx_detections(fp32, images, provider=e) for e in engines}
    rows = []
    for name in names:
        fields, parts = SCHEMES[name]
        path = output / f"{name}.onnx"
        start = time.time()
        config = Int8StaticConfig(calibration=calibration, method=fields.get("method", "percentile"), keep_float=(),
                                  **{k: v for k, v in fields.items() if k != "method"})
        quantize(fp32, path, config, extra_excluded=float_nodes(proto) + float_convs(proto, parts))
        row: dict[str, Any] = {"scheme": name, "fields": fields, "float_convs": list(parts)}
        for engine in engines:
            found = onnx_detections(path, images, provider=engine)
            every = compare_detections(reference[engine], found, threshold)
            first = {k: v[:len(val)] for k, v in reference[engine].items()}
            val_only = compare_detections(first, {k: v[:len(val)] for k, v in found.items()}, threshold)
            row[engine] = {"number_agreement": every["number_agreement"], "box_iou_mean": every["box_iou_mean"],
                           "val_number_agreement": val_only["number_agreement"]}
        path.unlink()
        rows.append(row)
        click.echo(f"{name}: {json.dumps({e: row[e] for e in engines})} ({time.time() - start:.0f} s)", err=True)
    report = {"command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "fp32": str(fp32),
              "photos": int(len(images)), "val_photos": int(len(val)), "min_score": threshold,
              "cpu": cpu_report(), "onnxruntime_vs_openvino": list(engines), "rows": rows}
    (output / "schemes.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"Command: `{report['command']}`", "",
             f"{len(images)} real photos letterboxed ({len(val)} validation photos of {calib}"
             + (f", {', '.join(svhn)}" if svhn else "") + f"); threshold {threshold:g}; {report['cpu']['summary']}", "",
             "| scheme | onnxruntime: same number (val) | box IoU | OpenVINO: same number (val) | box IoU |",
             "|---|---|---|---|---|"]
    for r in rows:
        c, o = r["cpu"], r["openvino"]
        lines.append(f"| {r['scheme']} | {c['number_agreement']:.4f} ({c['val_number_agreement']:.4f}) | "
                     f"{c['box_iou_mean']:.4f} | {o['number_agreement']:.4f} ({o['val_number_agreement']:.4f}) | "
                     f"{o['box_iou_mean']:.4f} |")
    (output / "schemes.md").write_text("\n".join(lines) + "\n")
    click.echo(f"wrote {output / 'schemes.md'}")


if __name__ == "__main__":
    main()
