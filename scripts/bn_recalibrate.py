"""A detector run whose BatchNorm statistics are read again on real photos as the runtime would feed them (session 23,
models/det192x96-s33-tried/): each photo letterboxed whole (the first pass) and, where its digits take under
DETECTOR_REFINE_BELOW of its height, the refine window cut as the runtime cuts it, around its TRUE digits (the
runtime's own window follows the digits it read, which may miss or add one).

    python scripts/bn_recalibrate.py models/det192x96-run --build data/det192x96-d -o runs/det192x96-s33
    digitloc-train snap-weights runs/det192x96-s33 -o runs/det192x96-s33q --val-data data/det192x96-d

Every BatchNorm layer in order: its input's per-channel mean and variance over those inputs (the layers before it
already re-read) become its moving statistics. No weight is trained. The build's training photos are read, never a
test split's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np


def runtime_inputs(photos: list[Any], size: tuple[int, int]) -> np.ndarray:
    """The model inputs the runtime would make of ``photos``: each letterboxed whole, and the refine window around its
    true digits where they take under ``DETECTOR_REFINE_BELOW`` of its height."""
    from digitloc.runtime.detector import (
        DETECTOR_REFINE_BELOW,
        DETECTOR_REFINE_SHARE,
        clipped_refine_window,
        union_box,
    )
    from digitloc.runtime.preprocess import letterbox

    out = []
    for p in photos:
        out.append(letterbox(p.image, size))
        union = union_box(p.boxes)
        if union[3] - union[1] < DETECTOR_REFINE_BELOW * p.image.shape[0]:
            x1, y1, x2, y2 = clipped_refine_window(union, p.image.shape, size, DETECTOR_REFINE_SHARE)
            out.append(letterbox(p.image[y1:y2, x1:x2], size))
    return np.stack(out)


def recalibrate(model: Any, x: np.ndarray, batch: int = 64) -> list[tuple[str, float, float]]:
    """Set every BatchNorm's moving mean and variance to its input's over ``x``, layer by layer in order. Returns per
    layer: (name, the channels' mean shift in their old standard deviations, averaged; the channels' median variance
    ratio new / old)."""
    import keras

    moved = []
    for bn in [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]:
        probe = keras.Model(model.inputs, bn.input)
        total = squares = 0.0
        n = 0
        for i in range(0, len(x), batch):
            a = np.asarray(probe(x[i:i + batch], training=False), np.float64)
            a = a.reshape(-1, a.shape[-1])
            total, squares, n = total + a.sum(0), squares + (a * a).sum(0), n + len(a)
        mean = total / n
        var = np.maximum(squares / n - mean * mean, 0.0)
        old_mean, old_var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        moved.append((bn.name, float(np.mean(np.abs(mean - old_mean) / np.sqrt(old_var))),
                      float(np.median(var / old_var))))
        bn.moving_mean.assign(mean.astype(np.float32))
        bn.moving_variance.assign(var.astype(np.float32))
    return moved


@click.command()
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--build", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A detection build (digitloc-data detection): its training photos are read.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The run folder to write (model.keras, and RUN's config.json with a batchnorm_recalibrated record).")
@click.option("--force", is_flag=True, help="Write into an output folder that is not empty.")
def main(run: Path, build: Path, output: Path, force: bool) -> None:
    """RUN's detector with its BatchNorm statistics read again on BUILD's training photos, around their true digits."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.annotations.dataset.detection import build_photos
    from digitloc.runtime.fileio import OutputExistsError, atomic_path, atomic_write_text
    from digitloc.train.detfit import _inference_form, _refuse_filled

    try:
        _refuse_filled(output, "re-read", force)
        model = _inference_form(run)
        photos = build_photos(build, "training")
    except (DatasetError, OutputExistsError, OSError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    x = runtime_inputs(photos, tuple(model.inputs[0].shape[1:3]))
    click.echo(f"{len(photos)} photos -> {len(x)} inputs ({len(x) - len(photos)} refine windows)")
    moved = recalibrate(model, x)
    for name, shift, ratio in moved:
        click.echo(f"{name}: mean shift {shift:.3f} std, variance ratio {ratio:.3f}")
    config = json.loads((run / "config.json").read_text())
    config["batchnorm_recalibrated"] = {"from": str(run), "build": str(build), "photos": len(photos),
                                        "inputs": len(x), "layers": [name for name, _, _ in moved]}
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "config.json", json.dumps(config, indent=2))
    with atomic_path(output / "model.keras") as tmp:
        model.save(tmp)
    click.echo(f"wrote {output}")


if __name__ == "__main__":
    main()
