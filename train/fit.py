"""Train the two-head model on a built dataset and write a run folder.

The run folder holds: ``model.keras`` (best on validation), ``last.keras`` (for
``--resume``), ``config.json``, ``history.json`` and ``history.csv``, plots, and
``evaluation.json`` on the real held-out photos.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.dataset.augment import AugmentConfig, augment_batch
from digitloc.annotations.dataset.data import KIND_CROP, KIND_REAL, DataSet, DatasetError
from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, size_hw, size_text
from digitloc.runtime.fileio import OutputExistsError
from digitloc.train import record
from digitloc.train.model import CENTRE_OUTPUT, ModelConfig, ModelError, centre_grid
from digitloc.train.record import RunError, RunRecord


@dataclass
class TrainConfig:
    """One training run, saved as config.json beside what it produced."""

    data: str
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    frozen_epochs: int = 5  # phase 1 length when the backbone is pretrained
    box_loss: str = "mse+giou"
    box_weight: float = 1.0
    centre_weight: float = 0.5  # spatial head: weight of the centre-cell loss
    patience: int = 6
    augment: bool = True
    augmentation: dict[str, float] = field(default_factory=lambda: asdict(AugmentConfig()))  # its ranges
    seed: int = 0
    max_minutes: float | None = None  # stop after this long (the best checkpoint stays)
    strategy: str = "default"  # or "mirrored" (tf.distribute, several GPUs)
    init: str | None = None  # start from this saved model's weights (same architecture): fine-tuning
    init_backbone_only: bool = False  # take only the conv blocks from ``init`` (another input size): heads new
    steps_per_epoch: int | None = None  # shorter epochs (more checkpoints) for slow, wide models

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        data["model"] = ModelConfig.from_dict(data["model"])
        return cls(**data)


def load_splits(data_dir: str | os.PathLike[str]) -> tuple[DataSet, DataSet, DataSet | None]:
    """train, val and (if present) test splits of a built dataset folder."""
    data_dir = Path(data_dir)
    train, val = DataSet.load(data_dir / "train.npz"), DataSet.load(data_dir / "val.npz")
    test = DataSet.load(data_dir / "test.npz") if (data_dir / "test.npz").exists() else None
    if len(train) == 0 or len(val) == 0:
        raise DatasetError(f"{data_dir}: train and val must both hold samples")
    return train, val, test


def centre_cells(boxes: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Row-major index of the cell that holds each relative box's centre (the spatial head's target)."""
    rows, cols = grid
    cx = np.clip((boxes[:, 0] + boxes[:, 2]) / 2 * cols, 0, cols - 1).astype(np.int32)
    cy = np.clip((boxes[:, 1] + boxes[:, 3]) / 2 * rows, 0, rows - 1).astype(np.int32)
    return cy * cols + cx


def make_dataset(data: DataSet, batch_size: int, augment: AugmentConfig | None, seed: int, shuffle: bool,
                 repeat: bool = False, grid: tuple[int, int] | None = None) -> Any:
    """A tf.data pipeline over in-memory uint8 arrays; augmentation runs per batch on both cores.
    ``repeat`` makes it endless, for epochs given as a number of steps; with a spatial head's
    ``grid`` the targets include the cell of each box centre."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images, boxes, labels = data.images, data.boxes, data.labels.astype(np.int32)
    height, width = images.shape[1:3]

    def load(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.sort(index)
        batch_images, batch_boxes = images[idx], boxes[idx]
        if augment is not None:
            batch_images, batch_boxes = augment_batch(batch_images, batch_boxes, augment,
                                                      np.random.default_rng(rng.integers(2**63)))
        return batch_images, batch_boxes.astype(np.float32), labels[idx]

    def to_tensors(index: Any) -> Any:
        im, bx, lb = tf.numpy_function(load, [index], [tf.uint8, tf.float32, tf.int32])
        im.set_shape([None, height, width, 3])
        bx.set_shape([None, 4])
        lb.set_shape([None])
        targets = {BBOX_OUTPUT: bx, DIGIT_OUTPUT: lb}
        if grid is not None:
            cell = tf.numpy_function(lambda b: centre_cells(b, grid), [bx], tf.int32)
            cell.set_shape([None])
            targets[CENTRE_OUTPUT] = cell
        return im, targets

    ds = tf.data.Dataset.range(len(data))
    if shuffle:
        ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size).map(to_tensors, num_parallel_calls=2, deterministic=not shuffle)
    return ds.prefetch(4)


def compile_model(model: Any, cfg: TrainConfig, learning_rate: float) -> None:
    import keras

    from digitloc.train.losses import BOX_LOSSES, MeanIoU

    if cfg.box_loss not in BOX_LOSSES:
        raise ValueError(f"unknown box loss {cfg.box_loss!r}; choose one of {sorted(BOX_LOSSES)}")
    loss = {BBOX_OUTPUT: BOX_LOSSES[cfg.box_loss], DIGIT_OUTPUT: "sparse_categorical_crossentropy"}
    weights = {BBOX_OUTPUT: cfg.box_weight, DIGIT_OUTPUT: 1.0}
    if centre_grid(model) is not None:  # the spatial head learns where the centre is, cell by cell
        loss[CENTRE_OUTPUT] = "sparse_categorical_crossentropy"
        weights[CENTRE_OUTPUT] = cfg.centre_weight
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, loss_weights=weights,
                  metrics={BBOX_OUTPUT: [MeanIoU()], DIGIT_OUTPUT: ["accuracy"]})


def _callbacks(run_dir: Path, cfg: TrainConfig, val_real: DataSet | None, started: float) -> list[Any]:
    import keras

    class RealPhotos(keras.callbacks.Callback):
        """Log class accuracy and IoU on the real held-out one-digit photos each epoch."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is None or val_real is None or len(val_real) == 0:
                return
            from digitloc.annotations.metrics import evaluate_predictions
            from digitloc.train.model import keras_predict

            boxes, probs = keras_predict(self.model, val_real.images)
            figures = evaluate_predictions(val_real.boxes, val_real.labels, boxes, probs)
            logs["val_real_accuracy"] = figures["class_accuracy"]
            logs["val_real_iou"] = figures["mean_iou"]
            print(f"  real val photos: accuracy {figures['class_accuracy']:.4f}, mean IoU {figures['mean_iou']:.4f}",
                  flush=True)

    class TimeBudget(keras.callbacks.Callback):
        """Stop when the budget is spent, checked after every batch: the epoch is cut short, still
        validated and checkpointed."""

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if cfg.max_minutes is not None and time.time() - started > cfg.max_minutes * 60:
                if not self.model.stop_training:
                    print(f"time budget of {cfg.max_minutes} min reached at batch {batch + 1}", flush=True)
                self.model.stop_training = True

    class Progress(keras.callbacks.Callback):
        """A progress bar over each epoch's batches, with images/s."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            from digitloc.runtime.progress import progress

            self.bar = progress(total=self.params.get("steps"), desc=f"epoch {epoch + 1}", unit="batch")

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.bar.update(1)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.bar.close()

    monitor = "val_digit_accuracy"
    return [
        Progress(),
        RealPhotos(),
        keras.callbacks.ModelCheckpoint(run_dir / record.MODEL, monitor=monitor, mode="max", save_best_only=True),
        keras.callbacks.ModelCheckpoint(run_dir / record.LAST),
        keras.callbacks.CSVLogger(run_dir / record.HISTORY_CSV, append=True),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=0.3, patience=2, min_lr=1e-6),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=cfg.patience),
        TimeBudget(),
    ]


def train(cfg: TrainConfig, run_dir: str | os.PathLike[str], resume: bool = False, force: bool = False) -> dict:
    """Train per ``cfg`` into ``run_dir``; returns the evaluation figures."""
    import keras
    import tensorflow as tf

    from digitloc.train.model import backbone_layers, build_model, load_model

    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume or force):
        raise OutputExistsError(f"{run_dir}: already holds a run (use --resume to continue or --force)")
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunRecord(run_dir)
    if not resume:  # --force: nothing of an earlier run may leak in
        run.clear()
    if resume:
        saved = run.config()
        if saved is None:
            raise RunError(f"{run_dir}: no {record.CONFIG} to resume from")
        cfg = TrainConfig.from_dict({**saved, "epochs": cfg.epochs, "max_minutes": cfg.max_minutes})
    keras.utils.set_random_seed(cfg.seed)
    train_set, val_set, test_set = load_splits(cfg.data)
    data_hw, model_hw = tuple(train_set.images.shape[1:3]), size_hw(cfg.model.input_size)
    if data_hw != model_hw:
        raise DatasetError(f"{cfg.data}: images are {size_text(data_hw)} px but the model takes "
                           f"{size_text(model_hw)} px; rebuild the data or change --size")
    run.write_config(cfg.to_dict())
    val_real = val_set.select(val_set.kinds == KIND_REAL)

    strategy = tf.distribute.MirroredStrategy() if cfg.strategy == "mirrored" else tf.distribute.get_strategy()
    augment = AugmentConfig(**cfg.augmentation) if cfg.augment else None
    started = time.time()
    initial_epoch = run.epochs() if resume else 0
    with strategy.scope():
        if resume:
            model = load_model(run_dir / record.LAST, training=True)
        else:
            model = build_model(cfg.model)
            if cfg.init:
                copy_weights(load_model(cfg.init, training=True), model, cfg.init,
                             backbone_only=cfg.init_backbone_only)
    grid = centre_grid(model)
    train_ds = make_dataset(train_set, cfg.batch_size, augment, cfg.seed, shuffle=True,
                            repeat=cfg.steps_per_epoch is not None, grid=grid)
    val_ds = make_dataset(val_set, 256, None, cfg.seed, shuffle=False, grid=grid)
    phases = []
    if cfg.model.pretrained and initial_epoch < cfg.frozen_epochs:
        phases.append(("frozen", cfg.learning_rate, min(cfg.frozen_epochs, cfg.epochs), False))
    phases.append(("all", cfg.finetune_learning_rate if cfg.model.pretrained else cfg.learning_rate, cfg.epochs, True))
    for name, lr, end_epoch, trainable in phases:
        if initial_epoch >= end_epoch:
            continue
        for layer in backbone_layers(model):
            layer.trainable = trainable
        with strategy.scope():
            compile_model(model, cfg, lr)
        print(f"phase {name}: epochs {initial_epoch + 1}-{end_epoch}, learning rate {lr:g}", flush=True)
        model.fit(train_ds, validation_data=val_ds, epochs=end_epoch, initial_epoch=initial_epoch, shuffle=False,
                  steps_per_epoch=cfg.steps_per_epoch, callbacks=_callbacks(run_dir, cfg, val_real, started), verbose=2)
        initial_epoch = run.epochs()
        if model.stop_training and initial_epoch < end_epoch:
            break
    minutes = (time.time() - started) / 60
    best = load_model(run_dir / record.MODEL)
    evaluation = evaluate_run(best, train_set, val_set, test_set)
    evaluation["training_minutes"] = round(minutes, 1)
    evaluation["epochs_run"] = run.epochs()
    run.write_evaluation(evaluation)
    run.write_history_json()
    from digitloc.train.plots import plot_run

    plot_run(run_dir, best, val_set)
    return evaluation


def copy_weights(source: Any, target: Any, origin: str, backbone_only: bool = False) -> None:
    """Start ``target`` from ``source``'s weights; both must be the same architecture. With
    ``backbone_only`` only the conv blocks are copied (their kernels do not depend on the input
    size, so a model can start from one trained at another size); the heads start new."""
    if backbone_only:
        from digitloc.train.model import backbone_layers

        src = {layer.name: layer for layer in backbone_layers(source)}
        dst = {layer.name: layer for layer in backbone_layers(target)}
        if not dst or not dst.keys() <= src.keys() or any(
                [w.shape for w in src[n].get_weights()] != [w.shape for w in t.get_weights()] for n, t in dst.items()):
            raise ModelError(f"{origin}: its conv blocks do not fit this model (another width or BatchNorm setting?)")
        for name, layer in dst.items():
            layer.set_weights(src[name].get_weights())
        return
    src, dst = source.get_weights(), target.get_weights()
    shapes = [w.shape for w in src], [w.shape for w in dst]
    if shapes[0] != shapes[1]:
        raise ModelError(f"{origin}: its weights do not fit this model (another width, size or BatchNorm setting?)")
    target.set_weights(src)


def evaluate_run(model: Any, train_set: DataSet, val_set: DataSet, test_set: DataSet | None) -> dict:
    """Figures per held-out group: real one-digit photos (val, test, both) and crops, with the
    constant-box baseline beside them."""
    from digitloc.annotations.metrics import constant_box_baseline, evaluate_predictions
    from digitloc.train.model import keras_predict

    groups = {"val_real": val_set.select(val_set.kinds == KIND_REAL),
              "val_crop": val_set.select(val_set.kinds == KIND_CROP)}
    if test_set is not None:
        groups["test_real"] = test_set.select(test_set.kinds == KIND_REAL)
        groups["heldout_real"] = DataSet.concat([groups["val_real"], groups["test_real"]], val_set.images.shape[1:3])
    out: dict[str, Any] = {}
    for name, data in groups.items():
        if len(data) == 0:
            continue
        boxes, probs = keras_predict(model, data.images)
        out[name] = evaluate_predictions(data.boxes, data.labels, boxes, probs)
        out[name]["constant_box_baseline"] = constant_box_baseline(train_set.boxes, data.boxes)
    return out

