"""The same model through onnxruntime (digitloc's runtime), OpenVINO (reading the ONNX file) and
LiteRT (converted from the Keras model), int8 and fp32, timed interleaved in one process.

Round-robin: every configuration is warmed up first, then each repetition times every
configuration in turn, so that a noisy neighbour on a shared machine slows all of them alike.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.charts import pyplot, save_figure
from digitloc.annotations.metrics import agreement as prediction_agreement
from digitloc.annotations.metrics import class_accuracy

# "auto": the runtime's default read, Detector(provider="auto"): on a CPU with OpenVINO installed each batch
# size runs on onnxruntime or OpenVINO, whichever its probe found faster here (digitloc.runtime.engines).
# "onnxruntime": the runtime on onnxruntime alone (provider="cpu").
AUTO = "auto"
RUNTIMES = ("onnxruntime", AUTO, "openvino", "litert")
OURS = ("onnxruntime", AUTO)
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Config:
    runtime: str
    precision: str  # fp32 | int8
    batch: int

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision} b{self.batch}"


def ort_runner(path: Path, batch: int, threads: int | None) -> Runner:
    """digitloc's runtime path: the Detector's own session (its default options)."""
    from digitloc.runtime.detector import Detector

    detector = Detector(path, provider="cpu", threads=threads)
    return detector.run


def auto_runner(path: Path, batch: int, threads: int | None) -> Runner:
    """The runtime's default ``provider="auto"`` (its probe runs in the warm-up; what it chose is in
    ``auto_choices``)."""
    from digitloc.runtime.detector import Detector

    detector = Detector(path, provider=AUTO, threads=threads)
    _AUTO_DETECTORS.append(detector)
    return detector.run


_AUTO_DETECTORS: list[Any] = []


def auto_choices() -> list[dict[str, Any]]:
    """What each auto detector of this process chose per size class, and the probe's figures."""
    from dataclasses import asdict

    out = []
    for det in _AUTO_DETECTORS:
        for choice in getattr(det.session, "choices", {}).values():
            out.append({"model": det.model_path.name, **asdict(choice)})
    return out


@contextlib.contextmanager
def fresh_probe_cache() -> Iterator[None]:
    """An empty probe cache for the duration (the user's own cache is neither read nor written)."""
    from digitloc.runtime.engines import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    with tempfile.TemporaryDirectory(prefix="digitloc-probe-") as tmp:
        os.environ[CACHE_ENV] = tmp
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = before


def openvino_runner(path: Path, batch: int, threads: int | None) -> Runner:
    """OpenVINO on the ONNX file, as the runtime's ``openvino`` provider runs it (a static-shape
    model per batch size, latency hint, float layers in f32 rather than OpenVINO's bf16 default)."""
    from digitloc.runtime.detector import Detector

    return Detector(path, provider="openvino", threads=threads).run


def convert_litert(keras_path: Path, out_dir: Path, calibration: np.ndarray) -> dict[str, Path]:
    """fp32 and full-integer int8 .tflite files of the Keras model (SavedModel -> TFLiteConverter);
    the int8 one calibrated on ``calibration`` (uint8 images). Reuses files already in ``out_dir``."""
    paths = {"fp32": out_dir / f"{keras_path.parent.name}-fp32.tflite",
             "int8": out_dir / f"{keras_path.parent.name}-int8.tflite"}
    if all(p.exists() for p in paths.values()):
        return paths
    import tensorflow as tf

    from digitloc.train.model import load_model

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="digitloc-litert-") as tmp:
        saved = Path(tmp) / "saved"
        load_model(keras_path).export(str(saved), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        paths["fp32"].write_bytes(converter.convert())
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative() -> Any:
            for image in calibration:
                yield [image[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        paths["int8"].write_bytes(converter.convert())
    return paths


def litert_runner(path: Path, batch: int, threads: int | None) -> Runner:
    """LiteRT's interpreter (XNNPACK) with the input resized to the batch."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
    interpreter.allocate_tensors()
    outs = interpreter.get_output_details()
    # Output names follow the SavedModel signature; tell the two heads apart by their width.
    box_index = next(o["index"] for o in outs if o["shape"][-1] == 4)
    digit_index = next(o["index"] for o in outs if o["shape"][-1] == 10)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        interpreter.set_tensor(inp["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(box_index).copy(), interpreter.get_tensor(digit_index).copy()

    return run


def interleaved(runners: dict[Config, Runner], inputs: dict[int, np.ndarray], repeats: int, calls: int,
                warmup: int) -> dict[Config, list[float]]:
    """Images/s of each configuration, one figure per repetition, timed round-robin."""
    for cfg, run in runners.items():
        for _ in range(warmup):
            run(inputs[cfg.batch])
    rates: dict[Config, list[float]] = {cfg: [] for cfg in runners}
    for _ in range(repeats):
        for cfg, run in runners.items():
            x = inputs[cfg.batch]
            start = time.perf_counter()
            for _ in range(calls):
                run(x)
            rates[cfg].append(cfg.batch * calls / (time.perf_counter() - start))
    return rates


def summarize(rates: dict[Config, list[float]]) -> list[dict[str, Any]]:
    return [{"runtime": c.runtime, "precision": c.precision, "batch": c.batch,
             "images_per_s": statistics.median(r), "min": min(r), "max": max(r), "repeats": len(r)}
            for c, r in rates.items()]


def ratios(rows: list[dict[str, Any]], ours: tuple[str, ...] = OURS) -> list[dict[str, Any]]:
    """Each of ours (onnxruntime alone, and auto: the default read) against each peer at the same precision and batch."""
    by = {(r["runtime"], r["precision"], r["batch"]): r["images_per_s"] for r in rows}
    out = []
    for mine in ours:
        for (runtime, precision, batch), rate in sorted(by.items()):
            if runtime in ours or (mine, precision, batch) not in by:
                continue
            out.append({"ours": mine, "peer": runtime, "precision": precision, "batch": batch,
                        "ours_over_peer": by[(mine, precision, batch)] / rate})
    return out


def run_all(run: Runner, images: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``run`` over all images in batches of ``batch`` (the last one padded with the first images:
    a runner may only take its own batch size), outputs concatenated."""
    boxes, probs = [], []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.resize(images, (batch - n, *images.shape[1:]))])
        b, p = run(chunk)
        boxes.append(np.asarray(b)[:n])
        probs.append(np.asarray(p)[:n])
    return np.concatenate(boxes), np.concatenate(probs)


def agreement(runners: dict[Config, Runner], images: np.ndarray, reference: tuple[np.ndarray, np.ndarray],
              labels: np.ndarray | None, parts: dict[str, slice] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Class agreement and mean box IoU of each configuration with ``reference``, and accuracy: at
    every batch size timed (auto may run one photo and several on different engines). Each runner reads
    ``images`` once; the figures are given for each part of them (``parts``: name to slice; default
    ``{"all": every image}``)."""
    parts = parts or {"all": slice(None)}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in parts}
    for cfg, run in runners.items():
        boxes, probs = run_all(run, images, cfg.batch)
        for name, part in parts.items():
            figures = prediction_agreement(tuple(r[part] for r in reference), (boxes[part], probs[part]))
            row = {"runtime": cfg.runtime, "precision": cfg.precision, "batch": cfg.batch,
                   **{k: figures[k] for k in ("class_agreement", "box_iou_mean")}}
            if labels is not None:
                row["accuracy"] = class_accuracy(labels[part], probs[part])
            out[name].append(row)
    return out


def compare_markdown(result: dict[str, Any]) -> str:
    from digitloc.benchmarks.report import cpu_lines

    md = (cpu_lines(result) +
          f"Timed interleaved (round-robin, {result['repeats']} repetitions of {result['calls']} calls each); "
          "median images/s (min-max). The machine may be shared: compare within this table only.\n\n"
          "| runtime | precision | batch | images/s | min | max |\n|---|---|---|---|---|---|\n")
    md += "".join(f"| {r['runtime']} | {r['precision']} | {r['batch']} | {r['images_per_s']:.1f} | {r['min']:.1f} "
                  f"| {r['max']:.1f} |\n" for r in result["rows"])
    md += "\n| ours | over | precision | batch | ratio |\n|---|---|---|---|---|\n"
    md += "".join(f"| {r.get('ours', 'onnxruntime')} | {r['peer']} | {r['precision']} | {r['batch']} "
                  f"| {r['ours_over_peer']:.2f}x |\n" for r in result["ratios"])
    if result.get("auto_choices"):
        md += "\nWhat `auto` (the default read) chose, by its own probe in this run:\n\n"
        md += "".join(f"- {c['model']}, batch {c['batch']} ({c['size_class']}): **{c['engine']}** "
                      f"(probe images/s: {', '.join(f'{k} {v:.0f}' for k, v in c['images_per_s'].items())})\n"
                      for c in result["auto_choices"])
    for key, samples_key, what in (("agreement", "agreement_samples", "real held-out photos"),
                                   ("agreement_all", "agreement_all_samples",
                                    "real photos never trained on: the held-out ones and those of --agreement-data")):
        if result.get(key):
            md += (f"\nAgainst onnxruntime fp32 (batch 1) on {result[samples_key]} {what}:\n\n"
                   "| runtime | precision | batch | class agreement | box IoU | accuracy |\n|---|---|---|---|---|---|\n")
            md += "".join(f"| {r['runtime']} | {r['precision']} | {r.get('batch', 1)} | {r['class_agreement']:.4f} "
                          f"| {r['box_iou_mean']:.4f} | {r.get('accuracy', float('nan')):.4f} |\n"
                          for r in result[key])
    return md


def compare_chart(result: dict[str, Any], path: Path) -> Path:
    """Images/s per runtime, grouped by precision x batch, with the min-max range."""
    plt = pyplot()

    rows = result["rows"]
    groups = sorted({(r["precision"], r["batch"]) for r in rows})
    runtimes = [rt for rt in RUNTIMES if any(r["runtime"] == rt for r in rows)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(runtimes))
    for i, rt in enumerate(runtimes):
        sel = {(r["precision"], r["batch"]): r for r in rows if r["runtime"] == rt}
        xs = [g + i * width for g, key in enumerate(groups) if key in sel]
        vals = [sel[key]["images_per_s"] for key in groups if key in sel]
        err = [[sel[k]["images_per_s"] - sel[k]["min"] for k in groups if k in sel],
               [sel[k]["max"] - sel[k]["images_per_s"] for k in groups if k in sel]]
        ax.bar(xs, vals, width=width, yerr=err, capsize=3, label=rt)
    ax.set_xticks([g + width * (len(runtimes) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{p}\nbatch {b}" for p, b in groups])
    ax.set_ylabel("images/s (median, bar: min-max)")
    ax.set_title("\n".join(textwrap.wrap(result["environment"]["cpu_summary"], 100)), fontsize=7)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)
