"""The detector (contract version 2): reading order, letterbox, targets, data, export and runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from digitloc.annotations.detmetrics import (
    PhotoResult,
    average_precision,
    detection_figures,
    error_breakdown,
    greedy_match,
)
from digitloc.runtime.number import read_digits, reading_order, suppress, widen_boxes
from digitloc.runtime.preprocess import LETTERBOX_FILL, letterbox, letterbox_geometry, unletterbox_boxes

SIZE = (32, 64)  # the tiny detector's input (height, width)


def toy_detection(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark 32x64 images with 1-3 blocks; a block's class is its brightness step (23 * (class + 1))."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 12, (n, *SIZE, 3)).astype(np.uint8)
    boxes = np.zeros((n, 24, 4), np.float32)
    labels = np.full((n, 24), -1, np.int8)
    for i in range(n):
        for k, x in enumerate(sorted(rng.choice(np.arange(2, 54, 14), int(rng.integers(1, 4)), replace=False))):
            y, w, h = int(rng.integers(2, 12)), int(rng.integers(6, 10)), int(rng.integers(12, 19))
            c = int(rng.integers(10))
            images[i, y: y + h, x: x + w] = 23 * (c + 1)
            boxes[i, k] = [x / SIZE[1], y / SIZE[0], (x + w) / SIZE[1], (y + h) / SIZE[0]]
            labels[i, k] = c
    return images, boxes, labels


def test_reading_order_rows_and_columns() -> None:
    # "12" above "345": the top row first, each row left to right, whatever the input order.
    boxes = np.array([[40, 60, 50, 80], [10, 10, 20, 30], [25, 61, 35, 81], [10, 59, 20, 79], [25, 12, 35, 32]],
                     np.float32)
    assert reading_order(boxes).tolist() == [1, 4, 3, 2, 0]
    # one row with a slightly higher digit stays one row
    row = np.array([[30, 12, 40, 32], [10, 10, 20, 30], [50, 9, 60, 29]], np.float32)
    assert reading_order(row).tolist() == [1, 0, 2]
    assert reading_order(np.zeros((0, 4), np.float32)).tolist() == []


def test_read_digits_threshold_k_and_suppression() -> None:
    boxes = np.array([[0, 0, 10, 20], [20, 0, 30, 20], [40, 0, 50, 20], [1, 0, 11, 20], [60, 0, 70, 20]], np.float32)
    scores = np.array([0.9, 0.5, 0.2, 0.8, 0.4], np.float32)
    # 0.2 is below the threshold; box 3 repeats box 0 (IoU 0.82) and loses to it
    assert read_digits(boxes, scores, min_score=0.3).tolist() == [0, 1, 4]
    assert read_digits(boxes, scores, min_score=0.1).tolist() == [0, 1, 2, 4]
    # K: the most confident two, still in reading order
    assert read_digits(boxes, scores, min_score=0.3, max_digits=2).tolist() == [0, 1]
    assert read_digits(boxes, scores, min_score=0.95).tolist() == []
    assert suppress(boxes, scores, iou=0.9).tolist() == [0, 3, 1, 4, 2]


def test_widen_boxes_scales_the_width_about_the_centre_and_keeps_the_height() -> None:
    boxes = np.array([[10, 5, 20, 25], [0, 0, 4, 8]], np.float32)
    wide = widen_boxes(boxes, 1.5)
    assert np.allclose(wide, [[7.5, 5, 22.5, 25], [-1, 0, 5, 8]])
    assert np.allclose(widen_boxes(boxes[None], 1.5)[0], wide)  # any leading axes
    assert np.array_equal(widen_boxes(boxes, 1.0), boxes)


def test_read_digits_keeps_the_most_confident_digit_s_line_and_size() -> None:
    # "12" at 20 px tall; a lamp read as "5" twice their height beside them, a small plaque digit under them,
    # and a second row "34" of the same size below: with one_line only "12" is the number.
    boxes = np.array([[10, 10, 20, 30], [22, 11, 32, 31], [40, 0, 60, 40], [12, 34, 18, 42], [10, 50, 20, 70],
                      [22, 50, 32, 70]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.5], np.float32)
    assert read_digits(boxes, scores).tolist() == [0, 1]
    assert read_digits(boxes, scores, one_line=False).tolist() == [0, 1, 2, 3, 4, 5]
    # the bounds: 1.6 times the height is still the line's size, and a centre half a height away its line
    edge = np.array([[0, 10, 10, 30], [20, 4, 30, 36], [40, 20, 50, 40], [60, 3, 70, 38]], np.float32)
    assert read_digits(edge, np.array([0.9, 0.8, 0.7, 0.6], np.float32)).tolist() == [0, 1, 2]
    # a taller, more confident "digit" makes the line: the number's digits then drop out instead
    assert read_digits(boxes[[0, 1, 2]], np.array([0.5, 0.5, 0.9], np.float32)).tolist() == [2]
    # digits off the line take none of max_digits' places; a slanted line reads left to right
    assert read_digits(boxes, scores, max_digits=2).tolist() == [0, 1]
    slant = np.array([[0, 20, 10, 40], [12, 16, 22, 36], [24, 12, 34, 32], [36, 8, 46, 28]], np.float32)
    assert read_digits(slant, np.array([0.6, 0.9, 0.7, 0.5], np.float32)).tolist() == [0, 1, 2, 3]
    assert reading_order(slant).tolist() != [0, 1, 2, 3]  # rows alone would split it
    # a degenerate most confident box (clipped to no height) rules nothing out
    flat = np.array([[0, 10, 10, 10], [12, 10, 22, 30], [24, 0, 44, 40]], np.float32)
    assert read_digits(flat, np.array([0.9, 0.8, 0.7], np.float32)).tolist() == [0, 1, 2]


@pytest.mark.parametrize("hw", [(40, 200), (300, 90), (96, 192)])
def test_letterbox_round_trip(hw: tuple[int, int]) -> None:
    image = np.full((*hw, 3), 255, np.uint8)
    out = letterbox(image, (96, 192))
    scale, x, y, w, h = letterbox_geometry(hw, (96, 192))
    assert out.shape == (96, 192, 3)
    assert (out[y: y + h, x: x + w] == 255).all()
    assert (out == LETTERBOX_FILL).sum() == out.size - 3 * w * h
    box = np.array([0.1 * hw[1], 0.2 * hw[0], 0.6 * hw[1], 0.9 * hw[0]], np.float32)
    rel = (box * scale + np.array([x, y, x, y])) / np.array([192, 96, 192, 96])
    np.testing.assert_allclose(unletterbox_boxes(rel[None], hw, (96, 192))[0], box, atol=1e-3)


def test_targets_peak_at_each_digit_centre() -> None:
    from digitloc.train.detector import STRIDE, encode_targets

    _, boxes, labels = toy_detection(4, seed=1)
    y = encode_targets(boxes, labels, SIZE)
    assert y.shape == (4, SIZE[0] // STRIDE, SIZE[1] // STRIDE, 15)
    for n in range(4):
        for b, c in zip(boxes[n], labels[n], strict=True):
            if c < 0:
                continue
            cx = int((b[0] + b[2]) / 2 * SIZE[1] / STRIDE)
            cy = int((b[1] + b[3]) / 2 * SIZE[0] / STRIDE)
            assert y[n, cy, cx, c] == 1.0
            np.testing.assert_allclose(y[n, cy, cx, 10:14], b * np.array([64, 32, 64, 32]), atol=1e-4)
            assert y[n, cy, cx, 14] > 0
    assert y[..., :10].max() <= 1.0 and (y[..., :10] == 1.0).sum() == (labels >= 0).sum()



def test_an_ignored_region_is_neither_a_peak_nor_background() -> None:
    """A real digit SVHN left unboxed (IGNORE_LABEL, ``digitloc-data detection --ignore``): its cells carry no
    peak and cost the focal loss nothing however high the model scores them; outside it, background as before."""
    import keras

    from digitloc.annotations.dataset.detection import IGNORE_LABEL
    from digitloc.train.detector import IGNORE_HEAT, NUM_CLASSES, STRIDE, detection_loss, encode_targets

    boxes = np.zeros((1, 3, 4), np.float32)
    boxes[0, 0] = [0.1, 0.2, 0.3, 0.8]  # a digit 7
    boxes[0, 1] = [0.6, 0.2, 0.8, 0.8]  # an unboxed digit
    labels = np.array([[7, IGNORE_LABEL, -1]])
    y = encode_targets(boxes, labels, SIZE)
    cx, cy = int(0.7 * SIZE[1] / STRIDE), int(0.5 * SIZE[0] / STRIDE)
    assert np.all(y[0, cy, cx, :NUM_CLASSES] == IGNORE_HEAT) and (y[..., :NUM_CLASSES] == 1.0).sum() == 1
    assert y[0, cy, cx, NUM_CLASSES + 4] == 0  # no box regressed there
    plain = encode_targets(boxes, np.array([[7, -1, -1]]), SIZE)
    outside = np.ones(y.shape[:3], bool)
    outside[0, y[0, :, :, 0] == IGNORE_HEAT] = False
    assert np.array_equal(y[outside], plain[outside])  # every other cell as without the region
    loss = detection_loss(SIZE)
    logits = np.full(y.shape[:3] + (NUM_CLASSES + 4,), -6.0, np.float32)
    confident = logits.copy()
    confident[0, cy, cx, 3] = 6.0  # the model reads a 3 in the unboxed digit
    ignored = float(keras.ops.convert_to_numpy(loss(y, confident)) - keras.ops.convert_to_numpy(loss(y, logits)))
    punished = float(keras.ops.convert_to_numpy(loss(plain, confident)) - keras.ops.convert_to_numpy(loss(plain,
                                                                                                           logits)))
    assert abs(ignored) < 1e-6 and punished > 1.0


def test_metrics_count_numbers_digits_and_ap() -> None:
    t = np.array([[0, 0, 10, 20], [12, 0, 22, 20]], np.float32)
    right = PhotoResult(t + 1, np.array([3, 4]), t, np.array([3, 4]), share=0.3)
    wrong_class = PhotoResult(t, np.array([3, 5]), t, np.array([3, 4]), share=0.6)
    missed = PhotoResult(t[:1], np.array([3]), t, np.array([3, 4]), share=0.6)
    fig = detection_figures([right, wrong_class, missed])
    assert fig["number_accuracy"] == pytest.approx(1 / 3)
    assert fig["digit_recall"] == pytest.approx(4 / 6) and fig["digit_precision"] == pytest.approx(4 / 5)
    assert [b["photos"] for b in fig["by_share"]] == [1, 2]
    assert "by_pixels" not in fig  # boxes relative to a letterboxed input: the photo's pixels are not known
    for r, px in ((right, 20.0), (wrong_class, 20.0), (missed, 50.0)):
        r.digit_px = px
    by_px = detection_figures([right, wrong_class, missed])["by_pixels"]
    assert [(b["pixels"], b["photos"], b["number_accuracy"]) for b in by_px] == [("16-24 px", 2, 0.5), ("48+ px", 1, 0.0)]
    assert greedy_match(t[::-1], t).tolist() == [1, 0]
    scored = [(t, np.array([0.9, 0.8]), np.array([3, 4]))]
    assert average_precision(scored, [right]) == {"3": 1.0, "4": 1.0}
    # A box drawn inside its digit's (IoU 0.4) is not found at 0.5 but is at the lenient 0.3.
    short = PhotoResult(np.array([[0, 0, 10, 20], [12, 0, 22, 8]], np.float32), np.array([3, 4]), t, np.array([3, 4]),
                        origin="fit/1.png")
    fig = detection_figures([short])
    assert fig["digit_recall"] == pytest.approx(0.5) and fig["digit_recall_lenient"] == pytest.approx(1.0)
    assert detection_figures([wrong_class])["digit_recall_lenient"] == pytest.approx(0.5)  # the class still counts
    # benchmarks' by_folder: the figures per folder of the photos' origin.
    from digitloc.benchmarks.numbers import by_folder

    right.origin, wrong_class.origin = "train/1.png", "train/2.png"
    folders = by_folder([right, short, wrong_class])
    assert [(f["folder"], f["photos"], f["number_accuracy"]) for f in folders] == [("train", 2, 0.5), ("fit", 1, 1.0)]


def test_error_breakdown_names_what_each_wrong_number_got_wrong() -> None:
    t = np.array([[0, 0, 10, 20], [12, 0, 22, 20]], np.float32)
    extra_box = np.array([[30, 0, 40, 20]], np.float32)
    right = PhotoResult(t, np.array([3, 4]), t, np.array([3, 4]))
    misread = PhotoResult(t, np.array([3, 5]), t, np.array([3, 4]))
    missed = PhotoResult(t[:1], np.array([3]), t, np.array([3, 4]))
    added = PhotoResult(np.concatenate([t, extra_box]), np.array([3, 4, 1]), t, np.array([3, 4]))
    swapped = PhotoResult(t[::-1], np.array([4, 3]), t, np.array([3, 4]))  # found and right, read backwards
    both = PhotoResult(np.concatenate([t[:1], extra_box]), np.array([8, 1]), t, np.array([3, 4]))
    loose = PhotoResult(np.array([[0, 0, 10, 20], [12, 0, 30, 40]], np.float32), np.array([3, 7]), t,
                        np.array([3, 4]))  # the second box overlaps its digit at IoU 0.28 (and reads a 7)
    loose_but_right = PhotoResult(loose.pred_boxes, np.array([3, 4]), t, np.array([3, 4]))  # the number is right
    e = error_breakdown([right, misread, missed, added, swapped, both, loose, loose_but_right])
    assert e["wrong_numbers"] == 6
    assert e["photos_with"] == {"missed": 2, "misread": 2, "loose": 1, "extra": 2, "order": 1}
    assert e["digits"] == {"missed": 2, "misread": 2, "loose": 1, "extra": 2}
    assert e["loose_in_right_numbers"] == 1  # loose_but_right's second digit: its number is right, its box is not


def test_composer_keeps_whole_digits_only(tmp_path: Path) -> None:
    from digitloc.annotations.dataset.detection import KINDS, Composer, DetectionConfig, background_strips, load_photos

    from helpers import make_svhn_folder

    entries = [{"filename": f"{i}.png", "boxes": [{"label": 1 + i % 9, "left": 10 + 2 * i, "top": 8, "width": 12,
                                                    "height": 24}, {"label": 10, "left": 40, "top": 8, "width": 12,
                                                                    "height": 24}]} for i in range(6)]
    folder = make_svhn_folder(tmp_path / "svhn", entries, size=(48, 100))
    photos = load_photos([str(folder)])
    assert len(photos) == 6 and photos[0].labels.tolist() == [1, 0]
    cfg = DetectionConfig(size=(32, 64))
    composer = Composer(photos, background_strips(photos), cfg)
    for kind in KINDS:
        for seed in range(5):
            img, boxes, labels = composer.compose(np.random.default_rng(seed), kind)
            assert img.shape == (32, 64, 3) and img.dtype == np.uint8
            assert len(boxes) == len(labels) and ((labels >= 0) & (labels <= 9)).all()
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 32).all()
            if kind == "empty":
                assert len(boxes) == 0
            if kind == "photo":  # the runtime's letterbox: both digits, in place
                assert len(boxes) == 2


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detector trained briefly on toy blocks, saved as run/model.keras (inference form) with its
    config, threshold and a detection dataset folder beside it."""
    import keras

    from digitloc.train.detector import DetectorConfig, build_detector, detection_loss, encode_targets, inference_detector

    root = tmp_path_factory.mktemp("det")
    data = root / "data"
    data.mkdir()
    for split, n, seed in (("train", 256, 0), ("val", 64, 1)):
        images, boxes, labels = toy_detection(n, seed)
        np.savez(data / f"{split}.npz", images=images, boxes=boxes, labels=labels)
    keras.utils.set_random_seed(0)
    cfg = DetectorConfig(input_size=SIZE, width=0.125, neck=16, head=16, top_k=8)
    model = build_detector(cfg)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss={"maps": detection_loss(SIZE)})
    images, boxes, labels = toy_detection(512, seed=2)
    # 12 epochs: after 6, the share of blocks found swung from 0.41 to 0.76 with the seed (and fell under the
    # test's 0.6 at seed 0 with keras 3.15); after 12 it is 0.74-0.91 over seeds 0-3.
    model.fit(images, encode_targets(boxes, labels, SIZE), epochs=12, batch_size=32, verbose=0)
    run = root / "run"
    run.mkdir()
    inference_detector(model, cfg).save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"data": str(data), "model": cfg.to_dict()}))
    (run / "evaluation.json").write_text(json.dumps({"min_score": 0.3, "figures": {}}))
    return run


def test_keras_detector_finds_toy_blocks(tiny_detector: Path) -> None:
    from digitloc.train.model import load_model, predict_detections

    model = load_model(tiny_detector / "model.keras")
    images, boxes, labels = toy_detection(64, seed=9)
    det = predict_detections(model, images)
    assert det["boxes"].shape == (64, 8, 4) and det["classes"].dtype == np.int32
    assert (np.diff(det["scores"], axis=1) <= 1e-6).all()  # top-K comes sorted
    found = total = 0
    for n in range(64):  # briefly trained: where the blocks are is learned first (any class, IoU >= 0.5)
        order = read_digits(det["boxes"][n], det["scores"][n], min_score=0.05, one_line=False)  # blocks of any size
        truth = boxes[n][labels[n] >= 0]
        found += int((greedy_match(det["boxes"][n][order], truth) >= 0).sum())
        total += len(truth)
    assert found / total > 0.6, (found, total)


def test_detector_export_parity_and_runtime(tiny_detector: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from digitloc.export.detector import DetectorGate, export_detector, parity_photos
    from digitloc.export.quantize import Fp32Config, Int8StaticConfig
    from digitloc.runtime import contract
    from digitloc.runtime.detector import Detector
    from digitloc.train.int8grid import DETECTOR_FLOAT
    from digitloc.train.model import load_model

    keras_path = tiny_detector / "model.keras"
    model = load_model(keras_path)
    images, source = parity_photos(None, keras_path, SIZE, 64)
    fp32 = tmp_path / "det-fp32.onnx"
    report = export_detector(keras_path, model, fp32, Fp32Config(), images, source)
    assert report["passed"] and report["number_agreement"] >= 0.999 and report["box_iou_mean"] >= 0.999
    meta = ort.InferenceSession(str(fp32)).get_modelmeta().custom_metadata_map
    assert meta[contract.META_CONTRACT] == "2" and meta[contract.META_RESIZE_MODE] == "letterbox"
    assert meta[contract.META_MIN_SCORE] == "0.3" and meta[contract.META_TOP_K] == "8"
    import onnx

    from digitloc.export.triton import config_pbtxt

    triton = config_pbtxt(onnx.load(str(fp32)), "det")  # Triton serves the new outputs
    assert all(f'name: "{n}"' in triton for n in ("boxes", "scores", "classes", "bbox", "digit"))
    assert "TYPE_INT32" in triton and "dims: [ 8, 4 ]" in triton

    calib = parity_photos(None, keras_path, SIZE, 128, split="train")[0]
    int8 = tmp_path / "det-int8.onnx"
    report = export_detector(keras_path, model, int8, Int8StaticConfig(calibration=calib), images, source,
                             limits=DetectorGate(0.0, 0.0))
    assert report["excluded_nodes"] and all(any(p in n for p in DETECTOR_FLOAT) for n in report["excluded_nodes"])
    assert any("decode" in n for n in report["excluded_nodes"])  # the decoding stays float
    # In the file itself: the heads' convolutions have float weights, every other convolution (the backbone
    # and the neck's 3x3, renamed Conv__N by tf2onnx's BatchNorm folding) int8 weights (a DequantizeLinear).
    proto = onnx.load(str(int8))
    made_by = {out: node.op_type for node in proto.graph.node for out in node.output}
    convs = {node.name: made_by.get(node.input[1]) == "DequantizeLinear" for node in proto.graph.node
             if node.op_type == "Conv"}
    heads = [name for name in convs if any(p in name for p in ("heat_", "box_", "head_conv"))]
    assert len(heads) >= 3 and not any(convs[name] for name in heads)
    assert all(quantized for name, quantized in convs.items() if not any(p in name for p in DETECTOR_FLOAT))
    assert sum(1 for name in convs if name.startswith("Conv__")) > 1  # the BN-folded ones are there, int8
    assert 0.0 <= report["number_agreement"] <= 1.0

    # The runtime: a whole photo of another size is letterboxed, read, and its boxes come back in its pixels.
    photo = np.zeros((60, 100, 3), np.uint8)
    photo[10:45, 20:35] = 23 * 4  # a "3" block
    photo[10:45, 60:75] = 23 * 8  # a "7" block
    det = Detector(fp32, provider="cpu")
    assert det.is_detector and det.min_score == 0.3
    d = det.predict(photo)
    record = d.to_dict()
    assert record["number"] == d.number == "".join(str(x["digit"]) for x in record["digits"])
    xs = [x["bbox"][0] for x in record["digits"]]
    assert xs == sorted(xs) and all(0 <= v <= 100 for x in record["digits"] for v in x["bbox"][::2])
    # Boxes come back widened about their centres by box_width (the model's own with 1.0), within the photo.
    own, wide = (Detector(fp32, provider="cpu", min_score=0.0, **kw).predict(photo) for kw in ({"box_width": 1.0}, {}))
    assert own.number == wide.number and len(own.digits) == len(wide.digits) >= 1
    for a, b in zip((*own.digits, own), (*wide.digits, wide), strict=True):  # each digit, and the best one
        want = np.clip(widen_boxes(np.array(a.bbox), det.box_width), 0, [100, 60, 100, 60])
        assert np.allclose(b.bbox, want, atol=1e-3) and b.bbox[3] - b.bbox[1] == pytest.approx(a.bbox[3] - a.bbox[1])
    assert det.box_width > 1.0 and not np.allclose(own.digits[0].bbox, wide.digits[0].bbox)
    # digitloc-run --box-width reaches the Detector: its JSON boxes are the model's own at 1, widened by default.
    from click.testing import CliRunner

    from digitloc.runtime.cli import main as run_main

    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    boxes = {}
    for width in ("1", None):
        args = [str(tmp_path / "photo.png"), "--model", str(fp32), "--provider", "cpu", "--json", "--min-score", "0"]
        result = CliRunner().invoke(run_main, args + (["--box-width", width] if width else []))
        assert result.exit_code == 0, result.output
        line = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("{")))
        boxes[width] = [d["bbox"] for d in line["digits"]]
    assert len(boxes["1"]) == len(boxes[None]) >= 1
    assert np.allclose(boxes["1"], [d.bbox for d in own.digits], atol=0.01)
    assert np.allclose(boxes[None], [d.bbox for d in wide.digits], atol=0.01)
    with pytest.raises(ValueError, match="box_width"):
        Detector(fp32, provider="cpu", box_width=0.1)
    assert Detector(fp32, provider="cpu", min_score=1.0).predict(photo).number == ""
    assert len(Detector(fp32, provider="cpu", min_score=0.0, max_digits=1).predict(photo).digits) == 1
    with pytest.raises(ValueError, match="min_score"):
        Detector(fp32, provider="cpu", min_score=2.0)


def test_bench_misses_breaks_a_detector_s_misses_down(tiny_detector: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from digitloc.benchmarks.cli import main as bench
    from digitloc.export.detector import export_detector, parity_photos
    from digitloc.export.quantize import Fp32Config
    from digitloc.train.model import load_model

    from helpers import make_svhn_folder

    keras_path = tiny_detector / "model.keras"
    images, source = parity_photos(None, keras_path, SIZE, 16)
    onnx_path = tmp_path / "det.onnx"
    export_detector(keras_path, load_model(keras_path), onnx_path, Fp32Config(), images, source)
    entries = [{"filename": f"{i}.png", "boxes": [{"label": 3, "left": 10 + i, "top": 8, "width": 12, "height": 24},
                                                   {"label": 7, "left": 40, "top": 8, "width": 12, "height": 24}]}
               for i in range(4)]
    folder = make_svhn_folder(tmp_path / "svhn", entries, size=(48, 100))
    out = tmp_path / "misses"
    args = ["misses", str(onnx_path), "--svhn", str(folder), "--widths", "1,1.2", "-o", str(out)]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "misses.json").read_text())
    assert payload["photos"] == 4 and sum(b["digits"] for b in payload["by_pixels"]) == 8  # every true digit once
    assert all(abs(b["right"] + b["misread"] + b["missed"] - 1) < 0.01 for b in payload["by_pixels"])
    assert list(payload["recall_by_width"]) == ["1", "1.2"] and payload["boxes_by_source"] is not None
    assert payload["missed"]["digits"] == round(sum(b["missed"] * b["digits"] for b in payload["by_pixels"]))
    assert "Digits by their height in the photo's pixels" in (out / "misses.md").read_text()
    again = CliRunner().invoke(bench, args)  # a report already there: refused before reading, in one line
    assert again.exit_code != 0 and "already exists" in again.output
    for bad, message in ((["--widths", "0"], "--widths"), (["--widths", "x"], "--widths")):
        result = CliRunner().invoke(bench, [*args[:4], *bad, "-o", str(tmp_path / "m2")])
        assert result.exit_code != 0 and message in result.output
    one_digit = CliRunner().invoke(bench, ["misses", str(tiny_onnx), "--svhn", str(folder), "-o", str(tmp_path / "m3")])
    assert one_digit.exit_code != 0 and "not a detector" in one_digit.output
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m3" / "misses.json").exists()


def test_one_digit_model_reads_a_number_of_one_digit(tiny_onnx: Path) -> None:
    from digitloc.runtime.detector import Detector

    d = Detector(tiny_onnx, provider="cpu").predict(np.zeros((32, 32, 3), np.uint8))
    assert d.number == str(d.digit) and len(d.digits) == 1 and d.digits[0].bbox == d.bbox
    assert d.to_dict()["number"] == str(d.digit)


def test_detector_refine_reads_small_digits_again_from_a_window(tiny_detector: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from digitloc.export.detector import export_detector, parity_photos
    from digitloc.export.quantize import Fp32Config
    from digitloc.runtime.detector import DETECTOR_REFINE_SHARE, Detector, refine_window
    from digitloc.runtime.preprocess import unletterbox_boxes
    from digitloc.train.model import load_model

    keras_path = tiny_detector / "model.keras"
    images, source = parity_photos(None, keras_path, SIZE, 16)
    fp32 = tmp_path / "det.onnx"
    export_detector(keras_path, load_model(keras_path), fp32, Fp32Config(), images, source)
    # The model's outputs are set here, so that the test checks the second pass itself (the model's own boxes,
    # box_width 1.0; the widening has its own test): a dark input gets
    # one digit 3 at the same place, 0.2 of the input's height (then a weaker candidate); a bright one a
    # digit 0.8 of the height.
    rel = np.array([[0.55, 0.5, 0.6, 0.7], [0.1, 0.1, 0.2, 0.2]], np.float32)
    tall_rel = np.array([[0.55, 0.1, 0.6, 0.9], [0.1, 0.1, 0.2, 0.2]], np.float32)
    seen: list[list[tuple[int, ...]]] = []

    def fake_run(self: Detector, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        n = len(batch)
        boxes = np.stack([tall_rel if im.mean() > 40 else rel for im in batch])
        return (boxes, np.tile([0.9, 0.01], (n, 1)).astype(np.float32),
                np.full((n, 2), 3, np.int64), np.tile(np.eye(10, dtype=np.float32)[3], (n, 1)))

    real_pass = Detector._detect_pass

    def spy(self: Detector, ims: list[np.ndarray]) -> list:
        seen.append([im.shape for im in ims])
        return real_pass(self, ims)

    monkeypatch.setattr(Detector, "run_detector", fake_run)
    monkeypatch.setattr(Detector, "_detect_pass", spy)
    small = np.zeros((200, 400, 3), np.uint8)  # the digit read is 0.2 of the height: read again
    tall = np.full((100, 200, 3), 50, np.uint8)  # its digit is 0.8 of the height: read once

    plain = Detector(fp32, provider="cpu", refine=False, box_width=1.0).predict_batch([small, tall])
    assert seen == [[small.shape, tall.shape]]  # --no-refine: one pass
    seen.clear()
    refined = Detector(fp32, provider="cpu", box_width=1.0).predict_batch([small, tall])
    first = unletterbox_boxes(rel, small.shape[:2], SIZE)[0]
    x1, y1, x2, y2 = refine_window(first, SIZE, DETECTOR_REFINE_SHARE)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(400, x2), min(200, y2)
    assert x1 > 0 and y1 > 0  # a window inside the photo, away from its corner
    # The second pass read that one window only; the tall photo's digit is not read again.
    assert seen == [[small.shape, tall.shape], [(y2 - y1, x2 - x1, 3)]]
    expected = unletterbox_boxes(rel, (y2 - y1, x2 - x1), SIZE)[0] + [x1, y1, x1, y1]
    assert refined[0].number == "3" and np.allclose(refined[0].digits[0].bbox, expected, atol=1e-3)
    assert not np.allclose(refined[0].digits[0].bbox, plain[0].digits[0].bbox, atol=1.0)
    assert refined[1] == plain[1]
    # refine_share sets the window's size: the digits read take that share of its height.
    seen.clear()
    wide = Detector(fp32, provider="cpu", refine_share=0.25).predict_batch([small])
    x1, y1, x2, y2 = refine_window(first, SIZE, 0.25)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(400, x2), min(200, y2)
    shipped = refine_window(first, SIZE, DETECTOR_REFINE_SHARE)
    assert seen == [[small.shape], [(y2 - y1, x2 - x1, 3)]] and y2 - y1 > shipped[3] - shipped[1]
    assert wide[0].number == "3"
    with pytest.raises(ValueError, match="refine_share"):
        Detector(fp32, provider="cpu", refine_share=1.0)


@pytest.fixture
def tiny_detector_onnx(tiny_detector: Path, tmp_path: Path) -> Path:
    """The tiny detector exported to fp32 ONNX."""
    from digitloc.export.detector import export_detector, parity_photos
    from digitloc.export.quantize import Fp32Config
    from digitloc.train.model import load_model

    keras_path = tiny_detector / "model.keras"
    images, source = parity_photos(None, keras_path, SIZE, 16)
    fp32 = tmp_path / "det.onnx"
    export_detector(keras_path, load_model(keras_path), fp32, Fp32Config(), images, source)
    return fp32


def two_pass_model(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Sets every Detector's model outputs: odd calls (first passes) read a 3 at 0.9, even calls (refine passes) a 5
    at 0.6, at the same place, 0.2 of the input's height (then a weak candidate). Returns the call counter."""
    from digitloc.runtime.detector import Detector

    rel = np.array([[0.55, 0.5, 0.6, 0.7], [0.1, 0.1, 0.2, 0.2]], np.float32)
    calls = {"n": 0}

    def fake_run(self: Detector, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        calls["n"] += 1
        n = len(batch)
        digit, score = (3, 0.9) if calls["n"] % 2 else (5, 0.6)
        return (np.tile(rel, (n, 1, 1)), np.tile([score, 0.01], (n, 1)).astype(np.float32),
                np.full((n, 2), digit, np.int64), np.tile(np.eye(10, dtype=np.float32)[digit], (n, 1)))

    monkeypatch.setattr(Detector, "run_detector", fake_run)
    return calls


def import_script(name: str) -> Any:
    """A module of scripts/ (not a package)."""
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_pass_variants_base_reads_as_the_runtime_and_fuse_pools_both_passes(tiny_detector_onnx: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/pass_variants.py: its ``base`` must stay the runtime's own reading (else every variant is measured
    against something no user runs); ``fuse`` pools the first pass's candidates with the refine pass's."""
    from digitloc.runtime.detector import Detector

    variant_batch = import_script("pass_variants").variant_batch
    calls = two_pass_model(monkeypatch)
    photo = np.zeros((200, 400, 3), np.uint8)
    detector = Detector(tiny_detector_onnx, provider="cpu")
    shipped = detector.predict_batch([photo])
    assert calls["n"] == 2 and shipped[0].number == "5"  # the refine pass's reading replaces the first's
    monkeypatch.setattr(Detector, "_detect_batch", variant_batch("base"))
    calls["n"] = 0
    assert detector.predict_batch([photo]) == shipped
    monkeypatch.setattr(Detector, "_detect_batch", variant_batch("fuse"))
    calls["n"] = 0
    fused = detector.predict_batch([photo])
    # Pooled, the first pass's more confident 3 is read, not the refine pass's 5 (a smaller box on its line).
    assert fused[0].number == "3" and fused[0].digits[0].confidence == pytest.approx(0.9)


def test_two_thresholds_reads_as_the_runtime_at_one_threshold_and_apart_per_pass(
        tiny_detector_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/two_thresholds.py: at T1 = T2 = the runtime's threshold it reads what the runtime reads; T2 alone
    decides the refine pass (nothing read there keeps the first pass's digits), T1 alone the first pass."""
    from digitloc.runtime.detector import Detector

    calls = two_pass_model(monkeypatch)
    photo = np.zeros((200, 400, 3), np.uint8)
    runtime = Detector(tiny_detector_onnx, provider="cpu")
    shipped = runtime.predict_batch([photo])
    two = import_script("two_thresholds").two_threshold_detector(tiny_detector_onnx)
    two.t1 = two.t2 = runtime.min_score
    calls["n"] = 0
    assert two.predict_batch([photo]) == shipped and shipped[0].number == "5"
    two.t2 = 0.7  # the refine pass's 5 (0.6) is not read: the first pass's 3 stays
    calls["n"] = 0
    assert two.predict_batch([photo])[0].number == "3" and calls["n"] == 2
    two.t1, two.t2 = 0.7, 0.25  # the first pass's 3 (0.9) places the window; the refine pass reads its 5 at 0.25
    calls["n"] = 0
    assert two.predict_batch([photo])[0].number == "5" and calls["n"] == 2
    two.t1, two.t2 = 0.95, 0.25  # the first pass reads nothing: no window, no refine pass
    calls["n"] = 0
    assert two.predict_batch([photo])[0].number == "" and calls["n"] == 1


def test_bn_recalibrate_sets_every_batchnorm_to_its_inputs_statistics(tiny_detector: Path) -> None:
    """scripts/bn_recalibrate.py: after it, each BatchNorm's moving mean and variance are its input's over the photos
    given, its input computed with the layers before it already re-read; no other weight moves."""
    import keras

    from digitloc.train.model import load_model

    recalibrate = import_script("bn_recalibrate").recalibrate
    model = load_model(tiny_detector / "model.keras")
    before = {w.path: w.numpy().copy() for w in model.weights}
    x = np.random.default_rng(0).integers(0, 256, (10, *SIZE, 3), dtype=np.uint8)
    moved = recalibrate(model, x, batch=4)  # batches that do not divide the photos
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [name for name, _, _ in moved] == [bn.name for bn in bns] and len(bns) > 2
    for bn in bns:
        a = np.asarray(keras.Model(model.inputs, bn.input)(x, training=False), np.float64).reshape(-1, bn.input.shape[-1])
        np.testing.assert_allclose(bn.moving_mean.numpy(), a.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), a.var(0), rtol=1e-3, atol=1e-5)
    changed = {w.path for w in model.weights if not np.array_equal(w.numpy(), before[w.path])}
    assert changed and all("moving" in path for path in changed)


def test_bn_recalibrate_feeds_the_refine_window_the_runtime_cuts(tiny_detector_onnx: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/bn_recalibrate.py's inputs: the photo letterboxed whole, then, for digits under DETECTOR_REFINE_BELOW of
    its height, the very input the runtime's refine pass makes when it reads those digits' box."""
    from types import SimpleNamespace

    from digitloc.runtime.detector import Detector
    from digitloc.runtime.preprocess import unletterbox_boxes

    runtime_inputs = import_script("bn_recalibrate").runtime_inputs
    rel = np.array([[0.55, 0.5, 0.6, 0.7], [0.1, 0.1, 0.2, 0.2]], np.float32)
    fed: list[np.ndarray] = []

    def fake_run(self: Detector, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        fed.append(batch.copy())
        n = len(batch)
        return (np.tile(rel, (n, 1, 1)), np.tile([0.9, 0.01], (n, 1)).astype(np.float32),
                np.full((n, 2), 3, np.int64), np.tile(np.eye(10, dtype=np.float32)[3], (n, 1)))

    monkeypatch.setattr(Detector, "run_detector", fake_run)
    photo = np.random.default_rng(1).integers(0, 256, (200, 400, 3), dtype=np.uint8)
    Detector(tiny_detector_onnx, provider="cpu").predict_batch([photo])
    read = unletterbox_boxes(rel[:1], photo.shape[:2], SIZE)  # the box the runtime read: the photo's true digit here
    x = runtime_inputs([SimpleNamespace(image=photo, boxes=read)], SIZE)
    assert len(fed) == 2 and len(x) == 2  # a small digit: read whole, then from a window
    np.testing.assert_array_equal(x[0], fed[0][0])
    np.testing.assert_array_equal(x[1], fed[1][0])
    tall = unletterbox_boxes(np.array([[0.4, 0.05, 0.6, 0.95]], np.float32), photo.shape[:2], SIZE)
    assert len(runtime_inputs([SimpleNamespace(image=photo, boxes=tall)], SIZE)) == 1  # no window for a tall digit


def keras_conv_macs(model: Any) -> float:
    """Multiply-adds per image of a Keras model's Conv2D layers, from their own shapes."""
    from keras import layers

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin, _ = layer.kernel.shape
            total += float(np.prod(layer.output.shape[1:])) * kh * kw * cin
    return total


def test_mac_count_includes_the_neck_and_heads(tiny_detector: Path, tmp_path: Path) -> None:
    """The ONNX count equals the Keras layers' own arithmetic: the layers after the neck's up-sampling
    (neck, heads) are counted too, not left out for want of a shape."""
    from digitloc.benchmarks.macs import count_macs
    from digitloc.export.convert import keras_to_onnx
    from digitloc.train.model import load_model

    model = load_model(tiny_detector / "model.keras")
    path = tmp_path / "det.onnx"
    path.write_bytes(keras_to_onnx(model).SerializeToString())
    assert count_macs(path) == pytest.approx(keras_conv_macs(model), rel=1e-6)


def test_stem_stride_and_shared_head_keep_the_maps_and_start_from_a_run(tiny_detector: Path) -> None:
    """A stride-2 stem and a shared head keep the maps' shape, cost fewer multiply-adds, and start
    every layer from a saved detector of the plain design (the shared conv from the heatmap's)."""
    from digitloc.train.detector import DetectorConfig, build_detector, transfer_layers
    from digitloc.train.model import ModelError, load_model

    plain = DetectorConfig(input_size=SIZE, width=0.125, neck=16, head=16, top_k=8)
    base = build_detector(plain)
    fast = build_detector(DetectorConfig(input_size=SIZE, width=0.125, neck=16, head=16, top_k=8, stem_stride=2,
                                         shared_head=True))
    assert fast.output["maps"].shape[1:] == base.output["maps"].shape[1:]
    assert keras_conv_macs(fast) < keras_conv_macs(base)
    assert fast.get_layer("block1_conv1").output.shape[1] == SIZE[0] // 2
    assert transfer_layers(fast, tiny_detector / "model.keras") == []
    source = load_model(tiny_detector / "model.keras", training=True)
    assert np.array_equal(fast.get_layer("head_conv").get_weights()[0], source.get_layer("heat_conv").get_weights()[0])
    assert np.array_equal(fast.get_layer("block1_conv1").get_weights()[0],
                          source.get_layer("block1_conv1").get_weights()[0])
    wide = build_detector(DetectorConfig(input_size=SIZE, width=0.5, neck=32, head=32, top_k=8))
    with pytest.raises(ModelError, match="no layer"):
        transfer_layers(wide, tiny_detector / "model.keras")
    with pytest.raises(ModelError, match="stem stride"):
        DetectorConfig(stem_stride=3).check()


def test_detector_command_refuses_init_with_a_changed_design(tiny_detector: Path, tmp_path: Path) -> None:
    """--init continues a saved model as it is; asking for layers from it too is refused, naming both;
    and so is continuing it under options that name another design."""
    from click.testing import CliRunner

    from digitloc.train.cli import main

    keras_path = str(tiny_detector / "model.keras")
    result = CliRunner().invoke(main, ["detector", "--data", str(tmp_path), "-o", str(tmp_path / "run"),
                                       "--init", keras_path, "--init-layers", keras_path, "--stem-stride", "2"])
    assert result.exit_code != 0 and "does not go with --init-layers" in result.output
    assert not (tmp_path / "run").exists()
    from digitloc.train.detector import DetectorConfig, check_design
    from digitloc.train.model import ModelError, load_model

    saved = load_model(keras_path, training=True)
    plain = DetectorConfig(input_size=SIZE, width=0.125, neck=16, head=16, top_k=8)
    check_design(saved, plain, keras_path)  # the same design: nothing to say
    with pytest.raises(ModelError, match="stem stride 1 and two head convs; the options ask for stem stride 2"):
        check_design(saved, DetectorConfig(input_size=SIZE, width=0.125, stem_stride=2), keras_path)


def test_every_head_layer_of_either_design_stays_float() -> None:
    """int8 keeps the neck, the heads and the decoding float, whichever head design: no layer of them is
    left to quantize because its name is new."""
    from digitloc.train.detector import DetectorConfig, build_detector
    from digitloc.train.int8grid import DETECTOR_FLOAT

    for shared in (False, True):
        model = build_detector(DetectorConfig(input_size=SIZE, width=0.125, neck=16, head=16, top_k=8,
                                              shared_head=shared))
        after_backbone = [layer.name for layer in model.layers if layer.weights and not layer.name.startswith("block")]
        assert after_backbone and all(any(part in name for part in DETECTOR_FLOAT) for name in after_backbone)


def test_export_command_applies_its_gate_bounds_to_a_detector(tiny_detector: Path, tmp_path: Path) -> None:
    """--min-agreement reaches a detector's gate: a bound no export can meet (more than every photo)
    refuses the file, and the default bound lets the same fp32 export through."""
    from click.testing import CliRunner

    from digitloc.export.cli import main
    from digitloc.export.detector import DETECTOR_GATES, gate_limits

    assert gate_limits("fp32") == DETECTOR_GATES["fp32"]
    assert gate_limits("int8-static", 0.5).min_number_agreement == 0.5
    assert gate_limits("int8-static", None, 0.4).min_box_iou == 0.4
    out = tmp_path / "det.onnx"
    args = [str(tiny_detector / "model.keras"), "-o", str(out), "--parity-size", "32"]
    refused = CliRunner().invoke(main, [*args, "--min-agreement", "1.01"])
    assert refused.exit_code != 0 and "below 1.01" in refused.output and not out.exists()
    other = CliRunner().invoke(main, [*args, "--max-accuracy-drop", "0.01"])
    assert other.exit_code != 0 and "one-digit models' bounds" in other.output and not out.exists()
    passed = CliRunner().invoke(main, args)
    assert passed.exit_code == 0, passed.output
    assert out.exists()


def test_finish_detector_makes_the_inference_form_from_trained_weights(tiny_detector: Path, tmp_path: Path) -> None:
    """A stage trained under another Keras backend leaves only its training form; finish-detector makes
    the decoded inference form (the same detections) and the threshold from the validation photos, and
    a run with no weights is refused in one line naming it."""
    from click.testing import CliRunner

    from digitloc.train.cli import main
    from digitloc.train.model import load_model, predict_detections

    run = tmp_path / "gpu-run"
    run.mkdir()
    load_model(tiny_detector / "model.keras", training=True).save(run / "best-train.keras")
    (run / "config.json").write_text((tiny_detector / "config.json").read_text())
    result = CliRunner().invoke(main, ["finish-detector", str(run)])
    assert result.exit_code == 0, result.output
    assert "validation photos: 64" in result.output
    images, _, _ = toy_detection(16, seed=5)
    made = predict_detections(load_model(run / "model.keras"), images)
    shipped = predict_detections(load_model(tiny_detector / "model.keras"), images)
    np.testing.assert_allclose(made["scores"], shipped["scores"], atol=1e-5)
    assert json.loads((run / "evaluation.json").read_text())["figures"]["photos"] == 64

    (run / "best-train.keras").unlink()
    refused = CliRunner().invoke(main, ["finish-detector", str(run), "--val-data", str(tmp_path)])
    assert refused.exit_code != 0 and str(run) in refused.output and "no best-train.keras" in refused.output


def test_activation_noise_trains_the_same_layers_and_vanishes_at_inference(tiny_detector: Path, tmp_path: Path) -> None:
    """--act-noise wraps every ReLU of the backbone and neck with noise of the asked int8 steps: the
    wrapped model shares the plain model's layers, reads exactly as it does at inference (and after a
    save and load), and in training moves each ReLU's output by at most half the noise's width."""
    import keras

    from digitloc.train.detector import activation_steps, training_form, with_activation_noise
    from digitloc.train.model import load_model

    plain = training_form(load_model(tiny_detector / "model.keras", training=True))
    images, _, _ = toy_detection(32, seed=4)
    steps = activation_steps(plain, images)
    relus = [layer.name for layer in plain.layers if layer.name.endswith("_relu")]
    assert sorted(steps) == sorted(relus) and len(relus) >= 17 and min(steps.values()) > 0
    noisy = with_activation_noise(plain, steps, scale=2.0, seed=3)
    assert noisy.get_layer("block1_conv1") is plain.get_layer("block1_conv1")
    np.testing.assert_array_equal(np.asarray(noisy(images, training=False)["maps"]),
                                  np.asarray(plain(images, training=False)["maps"]))
    noisy.save(tmp_path / "noisy.keras")
    again = load_model(tmp_path / "noisy.keras", training=True)
    np.testing.assert_allclose(np.asarray(again(images, training=False)["maps"]),
                               np.asarray(plain(images, training=False)["maps"]), atol=1e-6)
    first = relus[0]
    layer = noisy.get_layer(f"{first}_noise")
    x = np.asarray(plain.get_layer(first).output.shape[1:])  # a shape, to make a tensor of
    ones = np.ones((2, *x), np.float32)
    moved = np.asarray(layer(keras.ops.convert_to_tensor(ones), training=True)) - ones
    assert 0 < np.abs(moved).max() <= steps[first] * 2.0 / 2 + 1e-6


def test_snap_weights_gives_the_fp32_file_the_int8_files_weights(tiny_detector: Path, tmp_path: Path) -> None:
    """snap-weights moves every convolution the int8 export quantizes onto its grid (BatchNorm folded):
    exported, the int8 file's dequantized weights are the fp32 file's, where before they were not; the
    record is a new run with its threshold chosen again; the run itself and an existing output are refused."""
    import onnx
    from click.testing import CliRunner
    from onnx import numpy_helper

    from digitloc.export.detector import DetectorGate, export_detector, parity_photos
    from digitloc.export.quantize import Fp32Config, Int8StaticConfig
    from digitloc.train.cli import main
    from digitloc.train.model import load_model

    out = tmp_path / "snapped"
    result = CliRunner().invoke(main, ["snap-weights", str(tiny_detector), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "validation photos: 64" in result.output
    config = json.loads((out / "config.json").read_text())
    assert len(config["int8_grid"]["convolutions"]) == 17  # 16 VGG19 convolutions and the neck's 3x3
    assert json.loads((out / "evaluation.json").read_text())["figures"]["photos"] == 64

    def weights(path: Path) -> tuple[list[np.ndarray], list[bool]]:
        """Each convolution's weights as the file computes with them (graph order: each export names its
        BatchNorm-folded convolutions anew), and whether they are int8."""
        proto = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in proto.graph.initializer}
        deq = {n.output[0]: n for n in proto.graph.node if n.op_type == "DequantizeLinear"}
        found, int8 = [], []
        for node in (n for n in proto.graph.node if n.op_type == "Conv"):
            int8.append(node.input[1] in deq)
            if int8[-1]:
                q, scale, zero = (inits[name] for name in deq[node.input[1]].input)
                found.append((q - zero.reshape(-1, 1, 1, 1)) * scale.reshape(-1, 1, 1, 1))
            else:
                found.append(inits[node.input[1]])
        return found, int8

    images, source = parity_photos(None, tiny_detector / "model.keras", SIZE, 64)
    calib = parity_photos(None, tiny_detector / "model.keras", SIZE, 64, split="train")[0]
    gaps = {}
    for name, run in (("plain", tiny_detector), ("snapped", out)):
        model = load_model(run / "model.keras")
        fp32, int8 = tmp_path / f"{name}-fp32.onnx", tmp_path / f"{name}-int8.onnx"
        export_detector(run / "model.keras", model, fp32, Fp32Config(), images, source)
        export_detector(run / "model.keras", model, int8, Int8StaticConfig(calibration=calib), images, source,
                        limits=DetectorGate(0.0, 0.0))
        (float_weights, _), (int8_weights, quantized) = weights(fp32), weights(int8)
        assert len(float_weights) == len(int8_weights) and sum(quantized) == 17
        training = json.loads({m.key: m.value for m in onnx.load(str(fp32)).metadata_props}["digitloc.training"])
        assert (training["int8_grid"] is None) == (name == "plain")  # the file says its weights are snapped
        gaps[name] = max(float(np.abs(q - f).max() / np.abs(f).max())
                         for q, f, is_int8 in zip(int8_weights, float_weights, quantized, strict=True) if is_int8)
    assert gaps["plain"] > 1e-3  # 7-bit rounding moves a weight by up to half a step (1/128 of the largest)
    assert gaps["snapped"] < 1e-5, gaps  # float32 rounding of the BatchNorm folding alone

    # Nothing there is replaced without --force; with it, a checkpoint left there that finish-detector would
    # turn back into an unsnapped model.keras goes.
    (out / "best-train.keras").write_text("an older run's checkpoint")
    before = (out / "model.keras").stat().st_mtime_ns
    again = CliRunner().invoke(main, ["snap-weights", str(tiny_detector), "-o", str(out)])
    assert again.exit_code != 0 and "not empty" in again.output and "--force" in again.output
    assert (out / "model.keras").stat().st_mtime_ns == before and (out / "best-train.keras").exists()
    forced = CliRunner().invoke(main, ["snap-weights", str(tiny_detector), "-o", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert not (out / "best-train.keras").exists() and not list(out.glob(".*"))  # no temporary file left
    itself = CliRunner().invoke(main, ["snap-weights", str(out), "-o", str(out), "--force"])
    assert itself.exit_code != 0 and "new folder" in itself.output


def test_average_weights_makes_one_run_of_the_mean_of_several(tiny_detector: Path, tmp_path: Path) -> None:
    """average-weights writes a run whose every weight (BatchNorm's moving statistics too) is the mean of
    the runs named, its threshold chosen again on the validation photos; keep-run keeps it without a
    history of its own; the exported file names the runs; a lone run, a run of another design, a folder
    that is no run, the output being one of the runs and an existing output are each refused in one line."""
    import onnx
    from click.testing import CliRunner

    from digitloc.export.detector import export_detector, parity_photos
    from digitloc.export.quantize import Fp32Config
    from digitloc.train.cli import main
    from digitloc.train.model import load_model

    other = tmp_path / "other"  # a second "fine-tuned" run: the tiny detector's weights moved
    other.mkdir()
    model = load_model(tiny_detector / "model.keras")
    rng = np.random.default_rng(0)
    moved = [w + rng.normal(0, 0.01, w.shape).astype(w.dtype) if w.dtype.kind == "f" else w
             for w in model.get_weights()]
    moved = [np.abs(w) if ("variance" in v.path) else w for w, v in zip(moved, model.weights, strict=True)]
    model.set_weights(moved)
    model.save(other / "model.keras")
    config = json.loads((tiny_detector / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config))
    (other / "history.json").write_text(json.dumps({"loss": [2.0, 1.5], "val_loss": [2.1, 1.7]}))
    out = tmp_path / "soup"
    result = CliRunner().invoke(main, ["average-weights", str(tiny_detector), str(other), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "validation photos: 64" in result.output
    plain = load_model(tiny_detector / "model.keras")
    soup = load_model(out / "model.keras")
    names = [v.path for v in soup.weights]
    assert any("moving_mean" in n for n in names) and any("moving_variance" in n for n in names)
    for name, a, b, s in zip(names, plain.get_weights(), moved, soup.get_weights(), strict=True):
        np.testing.assert_allclose(s, (a + b) / 2, rtol=0, atol=1e-6, err_msg=name)
    assert not np.allclose(plain.get_weights()[0], soup.get_weights()[0])  # it moved: the mean is not a copy
    record = json.loads((out / "config.json").read_text())
    assert record["soup"]["runs"] == [str(tiny_detector), str(other)] and record["model"] == config["model"]
    assert set(record["ingredients"]) == {str(tiny_detector), str(other)}
    assert json.loads((out / "evaluation.json").read_text())["figures"]["photos"] == 64
    assert (out / "curves.png").stat().st_size > 0  # the runs' validation loss (one of them has a history)

    (out / "history.json").write_text("{}")  # an earlier trained run's history, left there: --force clears it
    forced = CliRunner().invoke(main, ["average-weights", str(tiny_detector), str(other), "-o", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    kept = tmp_path / "kept"
    result = CliRunner().invoke(main, ["keep-run", str(out), str(kept), "--keep-weights"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in kept.iterdir()} == {"config.json", "evaluation.json", "curves.png", "model.keras"}

    images, source = parity_photos(None, out / "model.keras", SIZE, 32)
    onnx_path = tmp_path / "soup.onnx"
    export_detector(out / "model.keras", soup, onnx_path, Fp32Config(), images, source)
    training = json.loads({m.key: m.value for m in onnx.load(str(onnx_path)).metadata_props}["digitloc.training"])
    assert training["soup"]["runs"] == [str(tiny_detector), str(other)]

    wide = tmp_path / "wide"  # another design
    wide.mkdir()
    (wide / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "width": 0.25}}))
    (wide / "model.keras").write_bytes((tiny_detector / "model.keras").read_bytes())
    before = (out / "model.keras").stat().st_mtime_ns
    for args, words in (([str(tiny_detector)], "two runs or more"),
                        ([str(tiny_detector), str(tiny_detector)], "named twice"),
                        ([str(tiny_detector), str(wide)], "another design"),
                        ([str(tiny_detector), str(tmp_path / "kept" / "..")], "no readable config.json"),
                        ([str(tiny_detector), str(other), "-o", str(other), "--force"], "new folder"),
                        ([str(tiny_detector), str(other)], "not empty")):
        if "-o" not in args:
            args = [*args, "-o", str(out)]
        refused = CliRunner().invoke(main, ["average-weights", *args])
        assert refused.exit_code != 0 and words in refused.output, (args, refused.output)
        assert len(refused.output.strip().splitlines()) == 1, refused.output
    assert "width" in CliRunner().invoke(main, ["average-weights", str(tiny_detector), str(wide), "-o",
                                                str(tmp_path / "x")]).output
    assert (out / "model.keras").stat().st_mtime_ns == before  # nothing replaced without --force
