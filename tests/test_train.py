"""The two-head model: building, a few training steps, save/reload, losses and evaluation figures."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from digitloc.annotations.dataset.data import DataSet
from digitloc.annotations.metrics import constant_box_baseline, evaluate_predictions, failure_index
from digitloc.runtime.contract import BBOX_OUTPUT, DIGIT_OUTPUT, INPUT_NAME
from digitloc.train.cli import main as train_cli
from digitloc.train.fit import TrainConfig, compile_model, train
from digitloc.train.losses import giou_loss, mse_giou_loss
from digitloc.train.model import ModelConfig, ModelError, build_model, keras_predict, load_model
from digitloc.train.record import RunRecord

from helpers import toy_data as _toy_data

TINY = ModelConfig(input_size=(32, 32), width=0.125, batchnorm=True, box_units=(16,), class_units=(16,))


def test_model_contract() -> None:
    model = build_model(TINY)
    assert model.inputs[0].name == INPUT_NAME and model.inputs[0].dtype == "uint8"
    out = model(np.zeros((2, 32, 32, 3), np.uint8))
    assert set(out) == {BBOX_OUTPUT, DIGIT_OUTPUT}
    assert out[BBOX_OUTPUT].shape == (2, 4) and out[DIGIT_OUTPUT].shape == (2, 10)
    np.testing.assert_allclose(np.asarray(out[DIGIT_OUTPUT]).sum(axis=1), 1.0, atol=1e-5)


def test_bad_model_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="width 1.0"):
        build_model(ModelConfig(width=0.5, weights="imagenet"))
    with pytest.raises(ModelError, match="weights file not found"):
        build_model(ModelConfig(weights=str(tmp_path / "vgg19_notop.h5")))
    with pytest.raises(ModelError, match="minimum of 32"):
        build_model(ModelConfig(input_size=(16, 16)))


def test_a_few_steps_lower_the_loss() -> None:
    keras.utils.set_random_seed(0)
    images, boxes, labels = _toy_data(256)
    model = build_model(TINY)
    compile_model(model, TrainConfig(data=""), 3e-3)
    y = {BBOX_OUTPUT: boxes, DIGIT_OUTPUT: labels}
    history = model.fit(images, y, epochs=8, batch_size=32, verbose=0).history["loss"]
    assert history[-1] < 0.7 * history[0]


def test_saved_model_reloads_with_identical_outputs(tmp_path: Path) -> None:
    model = build_model(TINY)
    compile_model(model, TrainConfig(data=""), 1e-3)
    images, _, _ = _toy_data(8)
    path = tmp_path / "m.keras"
    model.save(path)
    again = load_model(path)
    a, b = model(images, training=False), again(images, training=False)
    for key in (BBOX_OUTPUT, DIGIT_OUTPUT):
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_box_losses_stay_finite_for_degenerate_boxes() -> None:
    true = tf.constant([[0.2, 0.2, 0.2, 0.2], [0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], tf.float32)
    pred = tf.constant([[0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(pred)
        loss = mse_giou_loss(true, pred)
    grad = tape.gradient(loss, pred)
    assert np.all(np.isfinite(loss.numpy())) and np.all(np.isfinite(grad.numpy()))
    # A perfect box scores GIoU loss 0; disjoint boxes more than 1.
    same = tf.constant([[0.1, 0.1, 0.5, 0.5]])
    assert abs(float(giou_loss(same, same)[0])) < 1e-5
    assert float(giou_loss(same, tf.constant([[0.6, 0.6, 0.9, 0.9]]))[0]) > 1.0


def test_evaluation_figures_on_a_hand_made_case() -> None:
    true_boxes = np.array([[0, 0, 1, 1], [0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1]], float)
    pred_boxes = np.array([[0, 0, 1, 1], [0, 0, 0.5, 0.25], [0, 0, 0.5, 0.5], [0, 0, 1, 1]], float)
    probs = np.eye(10)[[3, 7, 7, 0]]
    labels = np.array([3, 7, 2, 1])
    fig = evaluate_predictions(true_boxes, labels, pred_boxes, probs)
    assert fig["class_accuracy"] == pytest.approx(0.5)
    assert fig["mean_iou"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert fig["iou_hit_rate"] == pytest.approx(0.75)  # 0.5 counts as a hit
    assert fig["both_right"] == pytest.approx(0.5)  # samples 0 and 1
    assert fig["accuracy_box_found"] == pytest.approx(2 / 3)  # samples 0, 1, 3: right, right, wrong
    assert fig["accuracy_box_missed"] == 0.0  # sample 2
    assert fig["box_size_ratio"]["width"] == pytest.approx(1.0)
    assert fig["box_size_ratio"]["height"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert fig["box_size_ratio_median"] == {"width": pytest.approx(1.0), "height": pytest.approx(1.0)}  # 3 of 4 exact
    assert fig["per_class_accuracy"]["2"] == 0.0 and fig["per_class_accuracy"]["4"] is None
    assert fig["missed_box_side"] == {"left": 1, "right": 0, "over": 0}  # sample 2: the box left of the digit
    assert [b["samples"] for b in fig["accuracy_by_confidence"]] == [0, 0, 0, 4]  # one-hot: all at 1.0
    assert fig["accuracy_by_confidence"][-1]["accuracy"] == pytest.approx(0.5)
    assert fig["accuracy_by_confidence"][0]["accuracy"] is None
    cm = np.array(fig["confusion_matrix"])
    assert cm[3, 3] == 1 and cm[2, 7] == 1 and cm[1, 0] == 1 and cm.sum() == 4
    assert failure_index(true_boxes, labels, pred_boxes, probs).tolist() == [2, 3]  # wrong box; wrong digit
    base = constant_box_baseline(np.array([[0, 0, 1, 1], [0, 0, 0, 0]]), true_boxes[:1])
    assert base["box"] == [0, 0, 0.5, 0.5] and base["mean_iou"] == pytest.approx(0.25)


def _write_split(path: Path, images: np.ndarray, boxes: np.ndarray, labels: np.ndarray, kind: str) -> None:
    n = len(labels)
    DataSet(images, boxes, labels.astype(np.uint8), np.array([kind] * n), np.array([f"t/{i}" for i in range(n)])).save(path)


def test_train_writes_a_complete_run_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split, n, kind in (("train", 96, "synth"), ("val", 32, "real"), ("test", 16, "real")):
        _write_split(data / f"{split}.npz", *_toy_data(n, seed=len(split)), kind)
    cfg = TrainConfig(data=str(data), model=TINY, epochs=2, batch_size=32)
    evaluation = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("model.keras", "last.keras", "config.json", "history.json", "history.csv", "evaluation.json",
                 "curves.png", "confusion.png", "val-predictions.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["model"]["width"] == 0.125
    assert evaluation["epochs_run"] == 2
    # The figures are the saved best model's on the real val photos, and evaluation.json holds them.
    val = DataSet.load(data / "val.npz")
    _, probs = keras_predict(load_model(run / "model.keras"), val.images)
    assert evaluation["val_real"]["class_accuracy"] == pytest.approx(float((probs.argmax(1) == val.labels).mean()))
    assert json.loads((run / "evaluation.json").read_text())["val_real"] == evaluation["val_real"]
    assert len(json.loads((run / "history.json").read_text())) == 2
    with pytest.raises(FileExistsError):
        train(cfg, run)
    # Resume continues from last.keras up to the new epoch count.
    evaluation = train(TrainConfig(data=str(data), model=TINY, epochs=3, batch_size=32), run, resume=True)
    assert evaluation["epochs_run"] == 3
    # --force starts over: the earlier run's history is not carried into the new one.
    evaluation = train(TrainConfig(data=str(data), model=TINY, epochs=1, batch_size=32), run, force=True)
    assert evaluation["epochs_run"] == 1 and len(json.loads((run / "history.json").read_text())) == 1
    # The run's record, read through RunRecord and kept elsewhere by `digitloc-train keep-run`.
    record = RunRecord(run)
    assert record.config()["data"] == str(data) and record.data_folder() == data and record.epochs() == 1
    assert record.evaluation() == evaluation and len(record.history()) == 1
    kept = tmp_path / "kept"
    result = CliRunner().invoke(train_cli, ["keep-run", str(run), str(kept), "--keep-weights"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in kept.iterdir()} >= {"config.json", "history.csv", "history.json", "evaluation.json",
                                                "curves.png", "confusion.png", "val-predictions.png", "model.keras"}
    assert not (kept / "last.keras").exists() and RunRecord(kept).evaluation() == evaluation
    (run / "curves.png").unlink()
    result = CliRunner().invoke(train_cli, ["keep-run", str(run), str(tmp_path / "kept2")])
    assert result.exit_code == 1 and result.output == f"error: {run}: not a finished run (no curves.png)\n"


def test_init_copies_weights_and_refuses_another_architecture() -> None:
    from digitloc.train.fit import copy_weights

    images, _, _ = _toy_data(4)
    source, target = build_model(TINY), build_model(TINY)
    copy_weights(source, target, "source.keras")
    np.testing.assert_array_equal(np.asarray(source(images)[DIGIT_OUTPUT]), np.asarray(target(images)[DIGIT_OUTPUT]))
    wider = build_model(ModelConfig(input_size=(32, 32), width=0.25, batchnorm=True, box_units=(16,), class_units=(16,)))
    with pytest.raises(ModelError, match="source.keras: its weights do not fit"):
        copy_weights(source, wider, "source.keras")


def test_non_square_input_and_backbone_init_from_another_size() -> None:
    from digitloc.train.fit import copy_weights

    wide = ModelConfig(input_size=(32, 64), width=0.125, batchnorm=True, box_units=(16,), class_units=(16,))
    model = build_model(wide)
    assert tuple(model.inputs[0].shape[1:]) == (32, 64, 3)
    out = model(np.zeros((2, 32, 64, 3), np.uint8))
    assert out[BBOX_OUTPUT].shape == (2, 4) and out[DIGIT_OUTPUT].shape == (2, 10)
    assert ModelConfig.from_dict(json.loads(json.dumps(wide.to_dict()))) == wide  # (h, w) survives config.json
    square = build_model(TINY)
    with pytest.raises(ModelError, match="its weights do not fit"):
        copy_weights(square, model, "square.keras")
    copy_weights(square, model, "square.keras", backbone_only=True)
    for layer in square.layers:
        if layer.name.startswith("block") and layer.get_weights():
            for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)
    wider = build_model(ModelConfig(input_size=(32, 32), width=0.25, batchnorm=True, box_units=(16,), class_units=(16,)))
    with pytest.raises(ModelError, match="conv blocks do not fit"):
        copy_weights(wider, model, "wider.keras", backbone_only=True)


def test_fine_tune_from_a_saved_model_with_short_epochs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split, n, kind in (("train", 96, "synth"), ("val", 32, "real")):
        _write_split(data / f"{split}.npz", *_toy_data(n, seed=len(split)), kind)
    start = build_model(TINY)
    start.save(tmp_path / "start.keras")
    cfg = TrainConfig(data=str(data), model=TINY, epochs=3, batch_size=16, init=str(tmp_path / "start.keras"),
                      steps_per_epoch=2)
    evaluation = train(cfg, tmp_path / "run")
    assert evaluation["epochs_run"] == 3
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["init"].endswith("start.keras") and saved["steps_per_epoch"] == 2


def test_models_load_in_safe_mode_and_code_in_a_model_file_is_refused(tmp_path: Path) -> None:
    """The shipped models load with safe_mode=True; a model holding a Python lambda does not."""
    shipped = sorted(Path(__file__).resolve().parents[1].glob("models/*/model.keras"))
    assert shipped, "no shipped model.keras"
    assert load_model(shipped[0]).outputs
    inp = keras.Input((4,))
    hostile = keras.Model(inp, keras.layers.Lambda(lambda x: x * 2)(inp))
    hostile.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match="lambda.keras: not a Keras model .*(unsafe|Lambda)"):
        load_model(tmp_path / "lambda.keras")
