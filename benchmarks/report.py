"""Benchmark output: environment, JSON, Markdown tables and PNG charts."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from digitloc.annotations.charts import pyplot, save_figure
from digitloc.export.quantize import Fp32Config
from digitloc.runtime.fileio import atomic_write_text


def environment() -> dict[str, Any]:
    """CPU model, cores, library versions and providers: what the figures were measured on."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("digitloc", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "opencv-python-headless",
                 "tensorflow-cpu", "tensorflow", "keras", "tf2onnx"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    from digitloc.runtime.cpuinfo import cpu_report

    features = cpu_report()
    return {"cpu": features["cpu"], "cores": features["cores"], "isa": features["isa"],
            "int8_path": features["int8_path"], "cpu_summary": features["summary"], "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "providers": features["providers_available"]}


def latency_markdown(rows: list[dict[str, Any]]) -> str:
    head = "| model | provider | batch | p50 ms | p90 ms | p99 ms | images/s | GMAC/s | first run ms | peak RSS MB |\n"
    head += "|---|---|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['model']} | {r['provider']} | {r['batch']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
        f"| {r['images_per_s']:.1f} | {'' if r.get('gmacs_per_s') is None else format(r['gmacs_per_s'], '.1f')} "
        f"| {r['first_run_ms']:.1f} | {'' if r.get('peak_rss_mb') is None else format(r['peak_rss_mb'], '.0f')} |\n"
        for r in rows)
    return head + body


def drift_markdown(result: dict[str, Any]) -> str:
    k = result["keras"]
    head = cpu_lines(result)
    head += ("| model | size MB | class acc | mean IoU | IoU>=0.5 | both right | Δ acc (pt) | Δ IoU | agreement w/ Keras "
            "| max abs diff | box IoU w/ Keras |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = (f"| {k['model']} (Keras) | | {k['class_accuracy']:.4f} | {k['mean_iou']:.4f} | {k['iou_hit_rate']:.4f} "
            f"| {k['both_right']:.4f} | | | | | |\n")
    for r in result["variants"]:
        v = r["vs_keras"]
        body += (f"| {r['model']} | {r['size_mb']:.2f} | {r['class_accuracy']:.4f} | {r['mean_iou']:.4f} "
                 f"| {r['iou_hit_rate']:.4f} | {r['both_right']:.4f} | {100 * r['delta_class_accuracy']:+.2f} "
                 f"| {r['delta_mean_iou']:+.4f} | {v['class_agreement']:.4f} | {v['max_abs_diff']:.2g} "
                 f"| {v['box_iou_mean']:.4f} |\n")
    fp32 = [r for r in result["variants"] if r.get("vs_fp32")]
    if fp32:
        body += ("\nAgainst the fp32 ONNX model on the same CPU:\n\n| model | class agreement | box IoU mean "
                 "| box IoU min | Δ acc vs fp32 (pt) |\n|---|---|---|---|---|\n")
        base = next((r for r in result["variants"] if r.get("precision") == Fp32Config.name), None)
        for r in fp32:
            v = r["vs_fp32"]
            delta = "" if base is None else f"{100 * (r['class_accuracy'] - base['class_accuracy']):+.2f}"
            body += (f"| {r['model']} | {v['class_agreement']:.4f} | {v['box_iou_mean']:.4f} | {v['box_iou_min']:.3f} "
                     f"| {delta} |\n")
    return head + body


def cpu_lines(result: dict[str, Any]) -> str:
    """Markdown lines naming the command and the CPU (emulated or not) of a result."""
    env = result.get("environment", {})
    text = f"Command: `{result['command']}`\n\n" if result.get("command") else ""
    if result.get("device"):
        text += (f"CPU: {result['device']['summary']}: the ONNX models ran there (benchmarks/probe.py); Keras ran "
                 f"here, on {env.get('cpu_summary', '')}\n\n")
    elif result.get("emulated"):
        text += (f"CPU: **emulated** {result['emulated']} (exact results; speed under emulation means nothing); "
                 f"host: {env.get('cpu_summary', '')}\n\n")
    else:
        text += f"CPU: {env.get('cpu_summary', '')}\n\n"
    return text


def write_outputs(out_dir: Path, stem: str, payload: dict[str, Any], markdown: str, force: bool) -> list[Path]:
    """stem.json and stem.md in out_dir (atomically; refusing to overwrite without force)."""
    from digitloc.runtime.fileio import check_writable

    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    for p in paths:
        check_writable(p, force)
    atomic_write_text(paths[0], json.dumps(payload, indent=1))
    atomic_write_text(paths[1], markdown)
    return paths


def latency_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """p50 latency per model x provider at each batch size, with a p50-p99 bar."""
    plt = pyplot()

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        sel = [r for r in rows if r["batch"] == batch]
        labels = [f"{r['model']}\n{r['provider']}" for r in sel]
        p50 = [r["p50_ms"] / batch for r in sel]
        err = [[0] * len(sel), [(r["p99_ms"] - r["p50_ms"]) / batch for r in sel]]
        ax.bar(range(len(sel)), p50, yerr=err, capsize=4, color="tab:blue")
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("ms per image (p50, bar to p99)")
        ax.set_title(f"batch {batch}")
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def accuracy_latency_chart(drift: dict[str, Any], latency_rows: list[dict[str, Any]], path: Path) -> Path:
    """Class accuracy against CPU ms per image (largest batch measured) for each variant."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(drift["variants"]):
        times = [x for x in latency_rows if x["model"] == r["model"] and x["provider"] == "cpu"]
        if not times:
            continue
        best = max(times, key=lambda x: x["batch"])
        point = (best["p50_ms"] / best["batch"], 100 * r["class_accuracy"])
        ax.scatter(*point)
        # Variants often tie on accuracy: stagger the labels so that each stays readable.
        ax.annotate(r["model"], point, xytext=(6, 14 * (i % 4) - 21), textcoords="offset points", fontsize=7,
                    arrowprops={"arrowstyle": "-", "lw": 0.5})
    ax.set_xscale("log")
    ax.set_xlabel("CPU ms per image (p50, largest batch; log scale)")
    ax.set_ylabel("class accuracy %")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def drift_chart(drift: dict[str, Any], path: Path) -> Path:
    plt = pyplot()

    names = ["keras"] + [r["model"] for r in drift["variants"]]
    acc = [drift["keras"]["class_accuracy"]] + [r["class_accuracy"] for r in drift["variants"]]
    iou = [drift["keras"]["mean_iou"]] + [r["mean_iou"] for r in drift["variants"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], acc, width=0.4, label="class accuracy")
    ax.bar([i + 0.2 for i in x], iou, width=0.4, label="mean IoU")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title(f"accuracy drift on {drift['samples']} real held-out photos")
    return save_figure(fig, path)

