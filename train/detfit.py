"""Train the digit detector on a detection dataset (``digitloc-data detection``) and write a run.

The run folder holds ``model.keras`` (the inference form, best validation loss), ``last.keras``
(the training form, for ``--init``), ``config.json``, ``history.json`` / ``history.csv``,
``curves.png`` and ``evaluation.json``: the validation photos' figures at every score threshold
and the threshold chosen there (the best whole-number accuracy), which export writes into the
model's metadata. The evaluation photos of any test set are never looked at here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.dataset.data import DatasetError
from digitloc.annotations.dataset.detection import load_detection
from digitloc.annotations.detmetrics import choose_threshold, detection_figures, photo_results
from digitloc.runtime.fileio import OutputExistsError, atomic_write_text
from digitloc.runtime.progress import progress
from digitloc.train.detector import (
    MAPS_OUTPUT,
    DetectorConfig,
    activation_steps,
    build_detector,
    check_design,
    detection_loss,
    encode_targets,
    inference_detector,
    snap_to_int8_grid,
    training_form,
    transfer_backbone,
    transfer_layers,
    with_activation_noise,
)
from digitloc.train.model import predict_detections


@dataclass
class DetectorTrainConfig:
    """One detector training run, saved as config.json beside what it produced."""

    data: str
    model: DetectorConfig = field(default_factory=DetectorConfig)
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 300
    steps_per_epoch: int | None = None
    max_minutes: float | None = None
    init: str | None = None  # a saved detector (training or inference form) to continue from
    init_backbone: str | None = None  # a saved digitloc model whose conv blocks start the backbone
    init_layers: str | None = None  # a saved detector whose layers (same name and shape) start this design
    freeze_blocks: int = 0  # conv blocks 1..N kept as they start (BatchNorm in inference mode): no backward pass there
    seed: int = 0
    workers: int = 1  # processes encoding the batches' targets (a GPU outruns one)
    act_noise: float = 0.0  # int8 steps of uniform noise after each ReLU in training (0: none)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = self.model.to_dict()
        return out


def _sequence(data: dict[str, np.ndarray], batch_size: int, size: tuple[int, int], shuffle: bool, seed: int,
              steps: int | None = None, workers: int = 1) -> Any:
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=workers, use_multiprocessing=workers > 1)
            self.rng = np.random.default_rng(seed)
            self.order = np.arange(len(data["images"]))
            self.cursor = 0
            self.on_epoch_end()

        def __len__(self) -> int:
            return steps or math.ceil(len(self.order) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            start = (index * batch_size + (self.cursor if steps else 0)) % len(self.order)
            sel = np.take(self.order, np.arange(start, start + batch_size), mode="wrap")
            return data["images"][sel], encode_targets(data["boxes"][sel], data["labels"][sel], size)

        def on_epoch_end(self) -> None:
            if steps:
                self.cursor += steps * batch_size
            if shuffle and (not steps or self.cursor >= len(self.order)):
                self.rng.shuffle(self.order)
                self.cursor = 0

    return Batches()


def fit_detector(cfg: DetectorTrainConfig, out_dir: str | os.PathLike[str], force: bool = False) -> dict[str, Any]:
    """Train, keep the best checkpoint by validation loss, choose the threshold, write the run."""
    import keras

    out = Path(out_dir)
    if (out / "model.keras").exists() and not force:
        raise OutputExistsError(f"{out}: a run is already there (use --force to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.seed)
    train = load_detection(Path(cfg.data) / "train.npz")
    val = load_detection(Path(cfg.data) / "val.npz")
    size = tuple(cfg.model.input_size)
    if train["images"].shape[1:3] != size:
        raise DatasetError(f"{cfg.data}: samples are {train['images'].shape[2]}x{train['images'].shape[1]}, "
                           f"the model takes {size[1]}x{size[0]}")
    if cfg.init:
        from digitloc.train.model import load_model

        model = load_model(cfg.init, training=True)
        check_design(model, cfg.model, cfg.init)
        model = training_form(model)
    else:
        model = build_detector(cfg.model)
        if cfg.init_backbone:
            transfer_backbone(model, cfg.init_backbone)
        if cfg.init_layers:
            left = transfer_layers(model, cfg.init_layers)
            print(f"started from {cfg.init_layers}; layers left as built: {', '.join(left) or 'none'}")
    if cfg.act_noise > 0:
        pick = np.sort(np.random.default_rng(cfg.seed).permutation(len(train["images"]))[:256])
        steps = activation_steps(model, train["images"][pick])
        model = with_activation_noise(model, steps, cfg.act_noise, cfg.seed)
        print(f"activation noise: {cfg.act_noise:g} int8 steps after {len(steps)} ReLUs")
    for layer in model.layers:
        if any(layer.name.startswith(f"block{b}_") for b in range(1, cfg.freeze_blocks + 1)):
            layer.trainable = False
    steps = cfg.steps_per_epoch or math.ceil(len(train["images"]) / cfg.batch_size)
    total = steps * cfg.epochs
    schedule = keras.optimizers.schedules.CosineDecay(0.0, max(total - cfg.warmup_steps, 1), alpha=0.02,
                                                      warmup_target=cfg.learning_rate, warmup_steps=cfg.warmup_steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=5.0), loss={MAPS_OUTPUT: detection_loss(size)})
    atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else None

    class Deadline(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if deadline and time.monotonic() > deadline:
                self.model.stop_training = True

    class Progress(keras.callbacks.Callback):
        """The project's progress bar over every training batch (a background log shows the rate)."""

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.bar = progress(total=total, desc="train", unit="batch")

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

        def on_train_end(self, logs: dict | None = None) -> None:
            self.bar.close()

    best = out / "best-train.keras"
    callbacks = [keras.callbacks.ModelCheckpoint(best, monitor="val_loss", save_best_only=True),
                 keras.callbacks.CSVLogger(out / "history.csv"), Deadline(), Progress()]
    history = model.fit(_sequence(train, cfg.batch_size, size, True, cfg.seed, cfg.steps_per_epoch, cfg.workers),
                        epochs=cfg.epochs, validation_data=_sequence(val, 64, size, False, 0), callbacks=callbacks,
                        verbose=2)
    model.save(out / "last.keras")
    atomic_write_text(out / "history.json", json.dumps({k: [float(v) for v in vals]
                                                        for k, vals in history.history.items()}, indent=2))
    _curves(history.history, out / "curves.png")
    if keras.backend.backend() != "tensorflow":
        return {}  # the decoded inference form is TensorFlow's: finish_detector makes it
    return finish_detector(out, val)


def finish_detector(run: str | os.PathLike[str], val: dict[str, np.ndarray] | None = None,
                    data: str | None = None) -> dict[str, Any]:
    """The run's inference form (``model.keras``, the best checkpoint decoded in the graph) and its
    threshold chosen on the validation photos (``evaluation.json``). Needs the TensorFlow backend;
    a stage trained under another one (JAX on a GPU machine) is finished here by ``digitloc-train
    finish-detector``. ``data``: the detection build whose ``val.npz`` to read, instead of the run's own."""
    import keras

    from digitloc.train.model import load_model

    run = Path(run)
    if keras.backend.backend() != "tensorflow":
        raise DatasetError(f"{run}: the inference form is built with the TensorFlow backend (KERAS_BACKEND="
                           f"tensorflow), not {keras.backend.backend()}")
    config = json.loads((run / "config.json").read_text())
    model_cfg = DetectorConfig.from_dict(config["model"])
    source = next((run / name for name in ("best-train.keras", "last.keras") if (run / name).exists()), None)
    if source is None:
        raise DatasetError(f"{run}: no best-train.keras or last.keras to finish")
    if val is None:
        val = load_detection(Path(data or config["data"]) / "val.npz")
    infer = inference_detector(training_form(load_model(source, training=True)), model_cfg)
    infer.save(run / "model.keras")
    evaluation = validation_evaluation(infer, val)
    atomic_write_text(run / "evaluation.json", json.dumps(evaluation, indent=2))
    return evaluation


def validation_evaluation(model: Any, val: dict[str, np.ndarray]) -> dict[str, Any]:
    """The threshold chosen on the validation photos, and the figures there (evaluation.json)."""
    det = predict_detections(model, val["images"])
    threshold, rows = choose_threshold(det, val["boxes"], val["labels"])
    figures = detection_figures(photo_results(det, val["boxes"], val["labels"], threshold))
    return {"split": "val (the detection build's validation photos, letterboxed)", "min_score": threshold,
            "thresholds": rows, "figures": figures}


STALE_CHECKPOINTS = ("best-train.keras", "last.keras")  # finish-detector would make model.keras from them


def _refuse_filled(out: Path, what: str, force: bool) -> None:
    """A run folder written from another (snapped, averaged) is not written over a filled folder without --force."""
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} exists and is not empty (use --force to write the {what} run there)")


def _inference_form(path: Path) -> Any:
    """A finished detector run's model.keras, refused in one line when it is not the inference form."""
    from digitloc.runtime.contract import BOXES_OUTPUT
    from digitloc.train.model import load_model

    model = load_model(path / "model.keras")
    if not isinstance(model.output, dict) or BOXES_OUTPUT not in model.output:
        raise DatasetError(f"{path / 'model.keras'}: not a detector's inference form (a stage trained under JAX: "
                           "run finish-detector first)")
    return model


def _write_run(out: Path, config: dict[str, Any], evaluation: dict[str, Any], model: Any) -> None:
    """config.json and evaluation.json, then model.keras last, each written whole."""
    from digitloc.runtime.fileio import atomic_path

    atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    atomic_write_text(out / "evaluation.json", json.dumps(evaluation, indent=2))
    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)


def snap_detector(run: str | os.PathLike[str], out: str | os.PathLike[str], data: str | None = None,
                  force: bool = False) -> dict[str, Any]:
    """A new run ``out``: ``run``'s record, and its model with the weights the int8 export quantizes
    moved onto the int8 grid (``snap_to_int8_grid``), its threshold chosen again on the validation
    photos. Exported, its fp32 and int8 files hold the same convolution weights. ``data``: the
    detection build whose ``val.npz`` to read, instead of the run's own. Everything is computed
    before anything is written; each file is written whole, ``model.keras`` last."""
    from digitloc.runtime.fileio import atomic_path
    from digitloc.train.record import KEPT, OPTIONAL

    run, out = Path(run), Path(out)
    if out.resolve() == run.resolve():
        raise DatasetError(f"{out}: the snapped run must be a new folder, not {run} itself")
    _refuse_filled(out, "snapped", force)
    model = _inference_form(run)
    config = json.loads((run / "config.json").read_text())
    if not (data or config.get("data")):
        raise DatasetError(f"{run / 'config.json'} names no detection build: give --val-data")
    val = load_detection(Path(data or config["data"]) / "val.npz")
    names = snap_to_int8_grid(model)
    if not names:
        raise DatasetError(f"{run / 'model.keras'}: no convolution the int8 export quantizes was found to snap")
    evaluation = validation_evaluation(model, val)
    config["int8_grid"] = {"from": str(run), "levels": "per output channel, -64..64 steps of the largest magnitude",
                           "convolutions": names}
    out.mkdir(parents=True, exist_ok=True)
    for name in STALE_CHECKPOINTS:
        (out / name).unlink(missing_ok=True)
    for name in (*KEPT, *OPTIONAL):  # the record it came from, where there is one
        if name not in ("config.json", "evaluation.json") and (run / name).is_file():
            with atomic_path(out / name) as tmp:
                shutil.copy2(run / name, tmp)
    _write_run(out, config, evaluation, model)
    return evaluation


SOUP_HOW = ("the mean of every weight of the runs named (BatchNorm's moving statistics included), a uniform "
            "model soup; no training")


def mean_weights(weights: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each weight's mean over several models' ``get_weights()`` lists (one design), in its own dtype."""
    return [np.mean([w[i] for w in weights], axis=0).astype(weights[0][i].dtype) for i in range(len(weights[0]))]


def average_detectors(runs: list[str | os.PathLike[str]], out: str | os.PathLike[str], data: str | None = None,
                      force: bool = False) -> dict[str, Any]:
    """A new run ``out`` whose weights are the mean of ``runs``' (a uniform "model soup", Wortsman et
    al. 2022): detectors of one design fine-tuned from one ancestor often read better averaged than
    any one alone, at one model's cost. Its threshold is chosen again on the validation photos
    (``data``'s ``val.npz``, else the first run's build). Every run must be a finished detector of the
    same design; everything is computed before anything is written, ``model.keras`` last."""
    paths, out = [Path(r) for r in runs], Path(out)
    if len(paths) < 2:
        raise DatasetError("averaging needs two runs or more")
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise DatasetError(f"a run is named twice: {', '.join(str(p) for p in paths)}")
    if out.resolve() in resolved:
        raise DatasetError(f"{out}: the averaged run must be a new folder, not one of the runs averaged")
    configs = []
    for path in paths:
        try:
            configs.append(json.loads((path / "config.json").read_text()))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: no readable config.json, not a run folder ({exc})") from None
        if not isinstance(configs[-1], dict) or not isinstance(configs[-1].get("model"), dict):
            raise DatasetError(f"{path / 'config.json'}: names no model design, not a detector run")
    for path, config in zip(paths[1:], configs[1:], strict=True):
        if config["model"] != configs[0]["model"]:
            diff = sorted(k for k in {*config["model"], *configs[0]["model"]}
                          if config["model"].get(k) != configs[0]["model"].get(k))
            raise DatasetError(f"{path}: another design than {paths[0]} ({', '.join(diff)} differ): "
                               "only runs of one design can be averaged")
    if not (data or configs[0].get("data")):
        raise DatasetError(f"{paths[0] / 'config.json'} names no detection build: give --val-data")
    _refuse_filled(out, "averaged", force)
    models = [_inference_form(path) for path in paths]
    model = models[0]
    model.set_weights(mean_weights([m.get_weights() for m in models]))
    val_data = str(data or configs[0]["data"])
    evaluation = validation_evaluation(model, load_detection(Path(val_data) / "val.npz"))
    config = {"data": val_data, "model": configs[0]["model"],
              "soup": {"runs": [str(p) for p in paths], "how": SOUP_HOW},
              "ingredients": {str(p): c for p, c in zip(paths, configs, strict=True)}}
    histories = {str(p): json.loads((p / "history.json").read_text()) for p in paths if (p / "history.json").is_file()}
    out.mkdir(parents=True, exist_ok=True)
    for name in (*STALE_CHECKPOINTS, "history.csv", "history.json", "curves.png"):  # an earlier run's, kept by keep-run
        (out / name).unlink(missing_ok=True)
    if histories:
        _ingredient_curves(histories, out / "curves.png")
    _write_run(out, config, evaluation, model)
    return evaluation


def _ingredient_curves(histories: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Each averaged run's validation loss per epoch, as a PNG (an averaged run has no training of its own)."""
    from digitloc.annotations.charts import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    for name, history in histories.items():
        losses = history.get("val_loss", [])
        if losses:
            ax.plot(range(1, len(losses) + 1), losses, marker="o", label=Path(name).name)
    ax.set_xlabel("epoch of each run averaged")
    ax.set_ylabel("validation loss (focal + 5 x GIoU)")
    ax.set_title("the runs averaged (the average itself is not trained)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _curves(history: dict[str, list[float]], path: Path) -> None:
    """Training and validation loss per epoch, as a PNG."""
    from digitloc.annotations.charts import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 3.5))
    for key in ("loss", "val_loss"):
        if key in history:
            ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (focal + 5 x GIoU)")
    ax.legend()
    save_figure(fig, path)
