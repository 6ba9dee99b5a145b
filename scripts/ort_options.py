"""onnxruntime session options and int8 files against each other, timed round-robin in one process.

    python scripts/ort_options.py models/digitloc-default-int8.onnx OLD-int8.onnx --batch 1,32 \
        -o benchmarks/results/ort-options.md

The first file runs with each option set; further files run with the runtime's own session
options (``digitloc.runtime.detector.session_options``). ``--profile`` adds onnxruntime's
per-node kernel time of the first file at the largest batch (which layers cost the time).
"""

from __future__ import annotations

import shlex
import statistics
import sys
from pathlib import Path

import click
import numpy as np

# name: (extra session config entries, threads, spin). "default" is onnxruntime's own (threads spin);
# "no spinning" is the runtime's.
OPTIONS: dict[str, tuple[dict[str, str], int | None, bool]] = {
    "default": ({}, None, True),
    "no spinning": ({}, None, False),
    "dynamic_block_base 4": ({"session.dynamic_block_base": "4"}, None, True),
    "1 thread": ({}, 1, True),
}


def profile_nodes(path: Path, batch: int, calls: int = 20, top: int = 12) -> str:
    """Markdown: the nodes taking the most kernel time (onnxruntime's profiler, runtime options)."""
    import json
    import os
    import tempfile
    from collections import defaultdict

    import onnxruntime as ort

    from digitloc.runtime.contract import INPUT_NAME
    from digitloc.runtime.detector import session_options

    options = session_options()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).integers(0, 256, (batch, *session.get_inputs()[0].shape[1:]), dtype=np.uint8)
        for _ in range(calls):
            session.run(None, {INPUT_NAME: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[(e["args"].get("op_name", ""), e["name"][:-len("_kernel_time")])] += e["dur"]
    total = sum(times.values())
    md = (f"\nKernel time per node, {path.name} at batch {batch} ({calls} calls; onnxruntime's profiler):\n\n"
          "| node | op | share | ms per image |\n|---|---|---|---|\n")
    for (op, name), t in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        md += f"| {name} | {op} | {100 * t / total:.1f} % | {t / calls / batch / 1000:.4f} |\n"
    return md


def session_runner(path: Path, entries: dict[str, str] | None = None, threads: int | None = None,
                   spin: bool = False):
    """A file run through the runtime's session options (``session_options``) plus ``entries``;
    with no arguments, exactly as the runtime runs it."""
    import onnxruntime as ort

    from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, INPUT_NAME
    from digitloc.runtime.detector import session_options

    options = session_options(threads, spin)
    for key, value in (entries or {}).items():
        options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run([BBOX_OUTPUT, DIGIT_OUTPUT], {INPUT_NAME: x})


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--batch", "batches", default="1,32", show_default=True)
@click.option("--repeats", default=7, show_default=True)
@click.option("--calls", default=10, show_default=True)
@click.option("--profile", is_flag=True, help="Add the first file's kernel time per node at the largest batch.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(models: tuple[Path, ...], batches: str, repeats: int, calls: int, profile: bool, output: Path) -> None:
    from digitloc.benchmarks.compare import Config, interleaved
    from digitloc.runtime.cpuinfo import cpu_report
    from digitloc.runtime.detector import Detector

    sizes = [int(b) for b in batches.split(",")]
    runners = {}
    for b in sizes:
        for name, (entries, threads, spin) in OPTIONS.items():
            runners[Config(f"{models[0].name}, {name}", "int8", b)] = session_runner(models[0], entries, threads, spin)
        for other in models[1:]:
            runners[Config(f"{other.name}, runtime's options", "int8", b)] = session_runner(other)
    size = Detector(models[0], provider="cpu").input_size
    rng = np.random.default_rng(0)
    inputs = {b: rng.integers(0, 256, (b, *size, 3), dtype=np.uint8) for b in sizes}
    rates = interleaved(runners, inputs, repeats, calls, warmup=3)
    md = (f"Command: `python scripts/ort_options.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}`\n\n"
          f"CPU: {cpu_report()['summary']}\n\nRound-robin, {repeats} repetitions of {calls} calls; images/s.\n\n"
          "| file, options | batch | median | min | max |\n|---|---|---|---|---|\n")
    md += "".join(f"| {c.runtime} | {c.batch} | {statistics.median(r):.1f} | {min(r):.1f} | {max(r):.1f} |\n"
                  for c, r in rates.items())
    if profile:
        md += profile_nodes(models[0], max(sizes))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(md)
    click.echo(md)


if __name__ == "__main__":
    main()
