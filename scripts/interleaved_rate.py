"""Images per second of several ONNX files, timed in turns (a quick A/B on a shared host).

    python scripts/interleaved_rate.py 32 models/digitloc-detector-int8.onnx other-int8.onnx
    python scripts/interleaved_rate.py 32 a.onnx b.onnx --engine openvino --rounds 31

Random uint8 images, each model fed at its own input size (a 192x96 and a 256x128 detector compare as
photos per second), through the runtime's own interleaved timer
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
    rng = np.random.default_rng(0)
    inputs = {name: rng.integers(0, 256, (batch, *s.get_inputs()[0].shape[1:3], 3), dtype=np.uint8)
              for name, s in sessions.items()}
    x = next(iter(inputs.values()))  # the timer counts its rows; each runner feeds its own size
    outputs = {name: [o.name for o in s.get_outputs()] for name, s in sessions.items()}
    runners = {name: (lambda _images, s=s, out=outputs[name], own=inputs[name]: s.run(out, {INPUT_NAME: own}))
               for name, s in sessions.items()}
    for name, rate in time_engines(runners, x, rounds).items():
        click.echo(f"{name}: {rate:.1f} img/s ({engine}, batch {batch}, median of {rounds} rounds)")


if __name__ == "__main__":
    main()
