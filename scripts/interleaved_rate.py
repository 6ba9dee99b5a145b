"""Images per second of several ONNX files, timed in turns (a quick A/B on a shared host).

    python scripts/interleaved_rate.py 32 models/digitloc-detector-int8.onnx other-int8.onnx
    python scripts/interleaved_rate.py 32 a.onnx b.onnx --engine openvino --rounds 31

Random uint8 images at the first model's input size, through the runtime's own interleaved timer
(runtime.engines.time_engines: round-robin, reversed every other round, the median over the rounds).
Used for stage 6's and stage 7's speed (models/det192x96-*/speed.txt).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np


@click.command()
@click.argument("batch", type=click.IntRange(min=1))
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--engine", type=click.Choice(["cpu", "openvino"]), default="cpu", show_default=True,
              help="cpu: onnxruntime's CPU provider; openvino: OpenVINO.")
@click.option("--rounds", type=click.IntRange(min=3), default=21, show_default=True)
def main(batch: int, models: tuple[Path, ...], engine: str, rounds: int) -> None:
    """Time MODELS in turns at BATCH images per call; one line per model."""
    from digitloc.runtime.contract import INPUT_NAME
    from digitloc.runtime.detector import open_session
    from digitloc.runtime.engines import time_engines

    sessions = {str(p): open_session(p, engine) for p in models}
    first = next(iter(sessions.values()))
    _, h, w, _ = first.get_inputs()[0].shape
    x = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    outputs = {name: [o.name for o in s.get_outputs()] for name, s in sessions.items()}
    runners = {name: (lambda images, s=s, out=outputs[name]: s.run(out, {INPUT_NAME: images}))
               for name, s in sessions.items()}
    for name, rate in time_engines(runners, x, rounds).items():
        click.echo(f"{name}: {rate:.1f} img/s ({engine}, batch {batch}, median of {rounds} rounds)")


if __name__ == "__main__":
    main()
