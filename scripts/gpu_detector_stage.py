"""One detector training stage on a lent GPU machine, inside a fixed time budget.

The GPU machine has JAX and no TensorFlow, so the stage trains under Keras's JAX backend
(``KERAS_BACKEND=jax``): it builds a detection set with ``digitloc-data detection`` on the
machine's cores, times a short probe of training batches, sizes the cosine schedule to the time
left, and runs ``digitloc-train detector`` (the same ``fit_detector``, loss and checkpoints as on
a CPU). What comes back is the run's training form without optimizer state; ``digitloc-train
finish-detector RUN --val-data BUILD`` then makes the inference form and threshold with TensorFlow.

    KERAS_BACKEND=jax python3 scripts/gpu_detector_stage.py --init S.keras --svhn A --svhn B \
        --out RUN --budget-s 420 [--samples 200000 --batch 128 --lr 3e-4 ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


def probe_seconds_per_batch(data: str, init: str, batch: int, workers: int, batches: int = 60) -> float:
    """Seconds per training batch once compiled: a fit at learning rate 0 over ``batches`` batches,
    timed after its first 20 (the weights do not move; the run starts from ``init`` again)."""
    import keras

    from digitloc.annotations.dataset.detection import load_detection
    from digitloc.train.detector import MAPS_OUTPUT, detection_loss, training_form
    from digitloc.train.detfit import _sequence
    from digitloc.train.model import load_model

    model = training_form(load_model(init, training=True))  # as fit_detector continues it
    size = tuple(model.input_shape[1:3])
    with_val = load_detection(Path(data) / "val.npz")  # small; the probe repeats its photos
    model.compile(optimizer=keras.optimizers.Adam(0.0), loss={MAPS_OUTPUT: detection_loss(size)})
    stamps: list[float] = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, index: int, logs: dict | None = None) -> None:
            stamps.append(time.monotonic())

    model.fit(_sequence(with_val, batch, size, True, 0, batches, workers), epochs=1, callbacks=[Stamp()], verbose=0)
    return (stamps[-1] - stamps[19]) / (len(stamps) - 20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", required=True, help="a saved detector (training form) to continue")
    ap.add_argument("--svhn", action="append", required=True)
    ap.add_argument("--folder-weight", action="append", default=[])
    ap.add_argument("--out", required=True, help="where the run's files go (the training form, history, log)")
    ap.add_argument("--build", default="/tmp/det-gpu", help="where the detection set is built")
    ap.add_argument("--samples", type=int, default=200000)
    ap.add_argument("--data-seed", type=int, default=20)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--budget-s", type=float, required=True, help="seconds from start to the end of training")
    ap.add_argument("--save-s", type=float, default=40, help="seconds kept back after training to save")
    args = ap.parse_args()

    import keras

    say(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    data_cmd = [sys.executable, "-c", "from digitloc.annotations.dataset.cli import main; main()", "detection",
                "--samples", str(args.samples), "--size", "192x96", "--seed", str(args.data_seed), "--split-seed", "0",
                "--workers", str(args.workers + 1), "-o", args.build, "--force"]
    for folder in args.svhn:
        data_cmd += ["--svhn", folder]
    for weight in args.folder_weight:
        data_cmd += ["--folder-weight", weight]
    subprocess.run(data_cmd, check=True)
    manifest = json.loads((Path(args.build) / "manifest.json").read_text())
    say(f"built {manifest['samples']} samples from {manifest['train_photos']} photos, "
        f"{manifest['val_photos']} validation photos")

    per_batch = probe_seconds_per_batch(args.build, args.init, args.batch, args.workers)
    left = args.budget_s - (time.monotonic() - T0) - args.save_s - 45  # the fit's own start and compile
    steps = max(args.epochs, int(left / per_batch))
    per_epoch = math.ceil(steps / args.epochs)
    say(f"probe: {per_batch * 1000:.1f} ms a batch of {args.batch}; {left:.0f} s left: "
        f"{args.epochs} epochs of {per_epoch} batches")
    run = Path(args.out) / "run"
    train_cmd = [sys.executable, "-c", "from digitloc.train.cli import main; main()", "detector",
                 "--data", args.build, "-o", str(run), "--size", "192x96", "--width", "0.25", "--stem-stride", "2",
                 "--shared-head", "--epochs", str(args.epochs), "--steps-per-epoch", str(per_epoch),
                 "--batch-size", str(args.batch), "--lr", str(args.lr), "--warmup-steps", str(args.warmup),
                 "--init", args.init, "--seed", str(args.seed), "--workers", str(args.workers),
                 "--max-minutes", f"{max(args.budget_s - (time.monotonic() - T0) - args.save_s, 60) / 60:.2f}",
                 "--force"]
    say(" ".join(train_cmd[3:]))
    subprocess.run(train_cmd, check=True)
    # What comes back: the training forms without optimizer state (a .keras with Adam's moments is 3x larger).
    from digitloc.train.model import load_model

    for name in ("best-train.keras", "last.keras"):
        if (run / name).exists():
            model = load_model(run / name, training=True)
            model.save(Path(args.out) / name)
    for name in ("config.json", "history.json", "curves.png"):
        if (run / name).exists():
            shutil.copy(run / name, Path(args.out) / name)
    shutil.copy(Path(args.build) / "manifest.json", Path(args.out) / "dataset-manifest.json")
    shutil.copy(Path(args.build) / "preview.png", Path(args.out) / "dataset-preview.png")
    say("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
