"""Wide framing, the spatial head, zoom-out augmentation, the framing evaluation and refine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digitloc.annotations.check import ClippedBox
from digitloc.annotations.dataset.augment import AugmentConfig, augment_expand
from digitloc.annotations.dataset.data import Photo, crop_window, framing_photos, reframe
from digitloc.annotations.dataset.stats import BoxStats, Framing

from helpers import make_svhn_folder, toy_data


def test_wide_framing_spans_the_real_range_and_keeps_the_digit_inside() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([Framing.named("wide").draw(BoxStats.default(), rng) for _ in range(2000)])
    rel_h, cx, cy, aspect = draws.T
    assert rel_h.min() < 0.2 and rel_h.max() > 0.9  # small and large digits both occur
    assert cx.min() < 0.25 and cx.max() > 0.75  # centres across the middle 60 %
    assert np.all(cy - rel_h / 2 >= -1e-9) and np.all(cy + rel_h / 2 <= 1 + 1e-9)  # never cut at top or bottom
    assert aspect.min() < 1.2 and aspect.max() > 3.0
    sample = np.array([Framing.named("sample").draw(BoxStats.default(), rng)[0] for _ in range(500)])
    assert np.median(sample) > np.median(rel_h)  # the sample framing is tighter
    with pytest.raises(ValueError, match="unknown framing"):
        Framing.named("loose")


def test_wide_crop_windows_reach_small_shares_beyond_the_photo() -> None:
    photo = Photo("x/1.png", Path("1.png"), 90, 60, [ClippedBox(3, 30, 10, 50, 50, 0)])
    rng = np.random.default_rng(1)
    shares = []
    for _ in range(300):
        (x1, y1, x2, y2), _ = crop_window(photo, 0, BoxStats.default(), rng, framing=Framing.named("wide"))
        assert x1 <= 30 and x2 >= 50 and y1 <= 10 and y2 >= 50  # the digit stays whole
        shares.append(40 / (y2 - y1))
    assert min(shares) < 0.2 and max(shares) > 0.85
    assert sum(s < 0.35 for s in shares) > 50  # small digits are common, not a corner case


def test_reframe_puts_the_digit_at_the_asked_share() -> None:
    image = np.full((60, 120, 3), 180, np.uint8)
    image[10:50, 50:70] = 20
    box = ClippedBox(4, 50, 10, 70, 50, 0)
    for share in (0.2, 0.45, 0.9):
        window, px = reframe(image, box, share, np.random.default_rng(0))
        h, w = window.shape[:2]
        assert abs((px[3] - px[1]) / h - share) < 0.02
        assert px[0] >= 0 and px[1] >= 0 and px[2] <= w and px[3] <= h
        assert window[int(px[1]) + 2:int(px[3]) - 2, int(px[0]) + 2:int(px[2]) - 2].max() == 20  # the digit is there


def test_framing_photos_take_only_held_out_one_digit_photos(tmp_path: Path) -> None:
    entries = [{"filename": f"{i}.png", "boxes": [{"label": 1 + i % 9, "left": 30, "top": 8, "width": 12,
                                                    "height": 24}]} for i in range(6)]
    entries.append({"filename": "multi.png", "boxes": [{"label": 1, "left": 10, "top": 8, "width": 12, "height": 24},
                                                       {"label": 2, "left": 40, "top": 8, "width": 12, "height": 24}]})
    folder = make_svhn_folder(tmp_path / "svhn", entries)
    framed = framing_photos([str(folder)], shares=(0.3, 0.8))
    assert len(framed) == 12 and {f.share for f in framed} == {0.3, 0.8}
    assert all(f.origin != "svhn/multi.png" for f in framed)
    again = framing_photos([str(folder)], shares=(0.3, 0.8))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(framed, again, strict=True))  # deterministic
    as_is = framing_photos([str(folder)], as_is=True)
    assert len(as_is) == 6 and all(f.image.shape[:2] == (40, 80) for f in as_is)  # the photos untouched
    assert all(f.share == pytest.approx(24 / 40) and f.box.tolist() == [30, 8, 42, 32] for f in as_is)


def test_zoom_out_moves_the_box_with_the_pixels() -> None:
    image = np.full((64, 128, 3), 200, np.uint8)
    image[16:48, 56:72] = 0
    box = np.array([56 / 128, 16 / 64, 72 / 128, 48 / 64], np.float32)
    cfg = AugmentConfig(expand=3.0)
    for seed in range(20):
        out, moved = augment_expand(image, box, cfg, np.random.default_rng(seed))
        assert moved[3] - moved[1] >= cfg.expand_min_height - 1e-6
        dark = np.argwhere(out.max(axis=2) < 100)
        found = np.array([dark[:, 1].min(), dark[:, 0].min(), dark[:, 1].max() + 1, dark[:, 0].max() + 1])
        assert np.abs(found - moved * np.array([128, 64, 128, 64])).max() <= 1.0  # within a pixel's rounding
    assert augment_expand(image, np.array([0.4, 0.45, 0.5, 0.55], np.float32), cfg,
                          np.random.default_rng(0))[1][3] == pytest.approx(0.55)  # too small to shrink: unchanged


def test_spatial_head_keeps_the_contract_learns_and_exports(tmp_path: Path) -> None:
    import keras

    from digitloc.export.convert import keras_to_onnx
    from digitloc.train.fit import TrainConfig, centre_cells, compile_model
    from digitloc.train.model import ModelConfig, build_model, centre_grid, load_model

    keras.utils.set_random_seed(0)
    cfg = ModelConfig(input_size=(32, 32), width=0.125, batchnorm=True, head="spatial", dropout=0.1)
    model = build_model(cfg)
    assert set(model.output) == {"bbox", "digit", "centre"} and centre_grid(model) == (2, 2)
    compile_model(model, TrainConfig(data="-", model=cfg), 3e-3)
    images, boxes, labels = toy_data(256, seed=3)
    targets = {"bbox": boxes, "digit": labels, "centre": centre_cells(boxes, (2, 2))}
    losses = model.fit(images, targets, epochs=8, batch_size=32, verbose=0).history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    model.save(tmp_path / "m.keras")
    reloaded = load_model(tmp_path / "m.keras")
    assert set(reloaded.output) == {"bbox", "digit"}  # the training-only output is dropped
    out = reloaded(images[:16], training=False)
    probs = np.asarray(out["digit"])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.all((np.asarray(out["bbox"]) >= 0) & (np.asarray(out["bbox"]) <= 1))
    import onnxruntime as ort

    session = ort.InferenceSession(keras_to_onnx(reloaded).SerializeToString(), providers=["CPUExecutionProvider"])
    onnx_boxes, onnx_probs = session.run(["bbox", "digit"], {"image": images[:16]})
    np.testing.assert_allclose(onnx_boxes, np.asarray(out["bbox"]), atol=1e-5)
    np.testing.assert_allclose(onnx_probs, probs, atol=1e-5)


def test_centre_cells_are_row_major() -> None:
    from digitloc.train.fit import centre_cells

    boxes = np.array([[0.0, 0.0, 0.1, 0.1], [0.9, 0.9, 1.0, 1.0], [0.6, 0.1, 0.8, 0.3]], np.float32)
    assert centre_cells(boxes, (4, 8)).tolist() == [0, 31, 5]


def test_refine_window_centres_the_box_at_the_refine_share() -> None:
    from digitloc.runtime.detector import REFINE_SHARE, crop_window, refine_window

    window = refine_window(np.array([100.0, 50.0, 110.0, 70.0]), (64, 128))
    x1, y1, x2, y2 = window
    assert (y2 - y1) == pytest.approx(20 / REFINE_SHARE, abs=1) and (x2 - x1) == pytest.approx(2 * (y2 - y1), abs=2)
    assert (x1 + x2) / 2 == pytest.approx(105, abs=1) and (y1 + y2) / 2 == pytest.approx(60, abs=1)
    image = np.random.default_rng(0).integers(0, 255, (80, 120, 3)).astype(np.uint8)
    assert crop_window(image, window).shape[:2] == (y2 - y1, x2 - x1)  # past the right edge: padded
    assert np.array_equal(crop_window(image, (10, 10, 40, 30)), image[10:30, 10:40])
    edge = crop_window(image, (-4, -3, 20, 10))
    assert edge.shape[:2] == (13, 24)
    assert np.array_equal(edge[3:, 4:], image[:10, :20])  # the photo sits where the window says
    assert np.array_equal(edge[0, 4:], image[0, :20])  # above it: its top row repeated


def test_refine_maps_the_second_box_back_to_the_photo(tiny_onnx: Path) -> None:
    from digitloc.runtime.detector import Detector

    images, _, _ = toy_data(4, seed=9, size=96)
    bgr = [im[:, :, ::-1].copy() for im in images]
    plain = Detector(tiny_onnx, provider="cpu", refine=False).predict_batch(bgr)
    refined = Detector(tiny_onnx, provider="cpu", refine=True, refine_below=1.01).predict_batch(bgr)
    for r in refined:
        x1, y1, x2, y2 = r.bbox
        assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 96
        assert abs(sum(r.probs) - 1) < 1e-4
    assert all(p.bbox != r.bbox for p, r in zip(plain, refined, strict=True))  # every photo was read again
    none = Detector(tiny_onnx, provider="cpu", refine=True, refine_below=0.0).predict_batch(bgr)
    assert [d.to_dict() for d in none] == [d.to_dict() for d in plain]  # no first box is that short: one pass
    heights = [(d.bbox[3] - d.bbox[1]) / 96 for d in plain]
    cut = float(np.median(heights))
    some = Detector(tiny_onnx, provider="cpu", refine=True, refine_below=cut).predict_batch(bgr)
    for h, p, s in zip(heights, plain, some, strict=True):
        assert (p.bbox == s.bbox) == (h >= cut)  # only the photos whose first box is short are read again


def test_latency_times_refine_against_one_pass(tiny_onnx: Path, tmp_path: Path) -> None:
    import json

    import cv2
    from click.testing import CliRunner

    from digitloc.benchmarks.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, im in enumerate(toy_data(3, seed=4, size=64)[0]):
        cv2.imwrite(str(photos / f"{i}.png"), im)
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["latency", str(tiny_onnx), "--batches", "2", "--runs", "3", "--warmup", "1",
                                       "--refine-photos", str(photos), "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "latency.json").read_text())
    providers = {r["provider"] for r in payload["rows"]}
    assert {"cpu", "cpu detector", "cpu detector + refine"} <= providers
    assert any("--refine costs" in line for line in payload["ratios"])


def test_drift_writes_the_framing_evaluation_of_every_variant(tiny_run: Path, tiny_onnx: Path, tmp_path: Path) -> None:
    import json

    import cv2
    from click.testing import CliRunner

    from digitloc.benchmarks.cli import main

    entries = [{"filename": f"{i}.png", "boxes": [{"label": 1 + i % 9, "left": 30, "top": 8, "width": 12,
                                                    "height": 24}]} for i in range(5)]
    folder = make_svhn_folder(tmp_path / "svhn", entries)
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["drift", str(tiny_run / "model.keras"), str(tiny_onnx), "--data",
                                       str(tiny_run.parent / "data"), "--kind", "crop", "--framing", str(folder),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "framing.json").read_text())
    names = list(payload["results"])
    assert names == ["model.keras (Keras)", tiny_onnx.name, f"{tiny_onnx.name} + refine"]
    assert all(len(r["per_share"]) == 6 and r["per_share"][0]["samples"] == 5 for r in payload["results"].values())
    keras, onnx = payload["results"][names[0]], payload["results"][names[1]]
    for k, o in zip(keras["per_share"], onnx["per_share"], strict=True):  # one pass: the same model
        assert k["class_accuracy"] == o["class_accuracy"] and k["mean_iou"] == pytest.approx(o["mean_iou"], abs=1e-4)
    assert [r["model"] for r in payload["as_is"]] == [tiny_onnx.name, f"{tiny_onnx.name} + refine"]
    assert payload["as_is"][0]["all"]["samples"] == 5
    sides = payload["as_is"][0]["all"]["missed_box_side"]
    assert sum(sides.values()) == round(5 * (1 - payload["as_is"][0]["all"]["iou_hit_rate"]))
    md = (out / "framing.md").read_text()
    assert md.startswith("Command: `digitloc-bench drift ") and payload["environment"]["cpu_summary"] in md
    assert cv2.imread(str(out / "framing.png")) is not None


def test_refine_reads_a_huge_photo_from_a_shrunk_copy(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import digitloc.runtime.detector as detector_module

    images, _, _ = toy_data(3, seed=2, size=96)
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
    full = detector_module.Detector(tiny_onnx, provider="cpu", refine=True, refine_below=1.01).predict_batch(bgr)
    monkeypatch.setattr(detector_module, "REFINE_MAX_PIXELS", 48 * 48)  # these 96x96 photos count as huge
    shrunk = detector_module.Detector(tiny_onnx, provider="cpu", refine=True, refine_below=1.01).predict_batch(bgr)
    small, scale = detector_module._bounded(bgr[0])
    assert small.shape == (48, 48, 3) and scale.tolist() == [0.5, 0.5, 0.5, 0.5]
    assert detector_module._bounded(bgr[0][:40, :40])[0].shape == (40, 40, 3)  # small enough: untouched
    for a, b in zip(full, shrunk, strict=True):
        assert all(0 <= v <= 96 for v in b.bbox)
        assert np.abs(np.array(a.bbox) - np.array(b.bbox)).max() < 16  # the same place, read at half the resolution


def test_photos_command_scores_every_one_digit_photo_by_height_share(tiny_onnx: Path, tmp_path: Path) -> None:
    # A user's own labelled folder: every one-digit photo (not only a build's held-out ones), one
    # pass and with refine, binned by the digit's height share; no Keras model needed.
    import json

    from click.testing import CliRunner

    from digitloc.benchmarks.cli import main

    heights = [10, 14, 20, 24, 28, 34, 36]  # in 40-pixel photos: shares 0.25 to 0.9
    entries = [{"filename": f"{i}.png", "boxes": [{"label": 1 + i % 9, "left": 30, "top": 2, "width": 8,
                                                    "height": h}]} for i, h in enumerate(heights)]
    entries.append({"filename": "multi.png", "boxes": [{"label": 1, "left": 5, "top": 2, "width": 8, "height": 20},
                                                       {"label": 2, "left": 20, "top": 2, "width": 8, "height": 20}]})
    folder = make_svhn_folder(tmp_path / "svhn", entries)
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["photos", str(tiny_onnx), "--svhn", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "photos.json").read_text())
    assert payload["photos"] == 8 and payload["one_digit_photos"] == 7  # the two-digit photo is not a one-digit photo
    (numbers,) = payload["numbers"]  # every photo read as a number, the two-digit one too
    assert numbers["photos"] == 8 and numbers["digits_true"] == 9 and "one_digit" in numbers
    assert len(numbers["failures"]) == round(8 * (1 - numbers["number_accuracy"]))
    assert [r["model"] for r in payload["rows"]] == [tiny_onnx.name, f"{tiny_onnx.name} + refine"]
    bins = payload["rows"][0]["by_height_share"]
    assert [b["photos"] for b in bins] == [1, 1, 2, 1, 2]  # 0.25 | 0.35 | 0.5 0.6 | 0.7 | 0.85 0.9
    assert sum(b["share_of_photos"] for b in bins) == pytest.approx(1.0)
    md = (out / "photos.md").read_text()
    assert md.startswith("Command: `digitloc-bench photos ") and "0.00-0.35 (1)" in md and "## House numbers" in md
    assert all((out / f).stat().st_size > 0 for f in ("photos.png", "photos-numbers.png", "photos-failures.png"))
    multi = make_svhn_folder(tmp_path / "multi", entries[-1:])  # no one-digit photo: the numbers alone
    alone = CliRunner().invoke(main, ["photos", str(tiny_onnx), "--svhn", str(multi), "-o", str(tmp_path / "x")])
    assert alone.exit_code == 0, alone.output
    payload = json.loads((tmp_path / "x" / "photos.json").read_text())
    assert payload["rows"] == [] and payload["numbers"][0]["photos"] == 1
    assert payload["numbers"][0]["number_accuracy"] == 0.0  # a one-digit model cannot read "12"


def test_photos_command_says_how_often_each_model_reads_the_first_model_s_number(tiny_onnx: Path,
                                                                                  tmp_path: Path) -> None:
    # An int8 file against its fp32 file, photo by photo: here a copy of the same file must read the
    # same number on every photo (the share is of agreement with the first model, not of right numbers).
    import importlib.util
    import json
    import shutil

    from click.testing import CliRunner

    from digitloc.benchmarks.cli import main

    entries = [{"filename": f"{i}.png", "boxes": [{"label": 1 + i, "left": 5 + 3 * i, "top": 4, "width": 8,
                                                    "height": 24}]} for i in range(3)]
    entries.append({"filename": "multi.png", "boxes": [{"label": 1, "left": 5, "top": 2, "width": 8, "height": 20},
                                                       {"label": 2, "left": 20, "top": 2, "width": 8, "height": 20}]})
    folder = make_svhn_folder(tmp_path / "svhn", entries)
    twin = tmp_path / "twin.onnx"
    shutil.copy(tiny_onnx, twin)
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, ["photos", str(tiny_onnx), str(twin), "--svhn", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "photos.json").read_text())
    first, second = payload["numbers"]
    assert payload["provider"] == "cpu" and payload["one_line"] is True
    assert first["engine"] == second["engine"] == "CPUExecutionProvider"
    assert "same_number_as_first" not in first and second["same_number_as_first"] == 1.0
    assert first["number_accuracy"] < 1.0  # a one-digit model misses "12": agreement is not accuracy
    md = (out / "photos.md").read_text()
    assert "Engine: --provider cpu (CPUExecutionProvider)" in md and "| twin.onnx | 1.0000 | CPUExecutionProvider |" in md
    ov = CliRunner().invoke(main, ["photos", str(tiny_onnx), "--svhn", str(folder), "--provider", "openvino",
                                   "-o", str(tmp_path / "ov")])
    if importlib.util.find_spec("openvino") is None:  # a clear one-line error, no report
        assert ov.exit_code == 1 and "OpenVINO was asked for but is not installed" in ov.output
        assert "Traceback" not in ov.output and not (tmp_path / "ov").exists()
    else:
        assert ov.exit_code == 0, ov.output
        assert json.loads((tmp_path / "ov" / "photos.json").read_text())["numbers"][0]["engine"] == "OpenVINO-CPU"


def test_numbers_table_compares_models_of_the_first_model_s_kind_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # fp32 detector first, an int8 detector that reads one photo differently, and a one-digit model: the
    # int8 rows get their share per refine setting, the one-digit model none (it cannot read "12").
    from digitloc.annotations.dataset.detection import DetPhoto
    from digitloc.benchmarks import numbers
    from digitloc.runtime import detector as detector_module
    from digitloc.runtime.detector import Detection, Digit

    reads = {"fp32.onnx": ["12", "3"], "int8.onnx": ["12", "8"], "one.onnx": ["1", "3"]}

    class Fake:
        def __init__(self, path: Path, **_: object) -> None:
            self.name, self.refine = Path(path).name, True
            self.is_detector, self.provider = self.name != "one.onnx", "fake"

        def predict_batch(self, images: list[np.ndarray]) -> list[Detection]:
            out = []
            for number in reads[self.name][: len(images)]:
                digits = tuple(Digit(int(c), 0.9, (4.0 + 10 * i, 2.0, 12.0 + 10 * i, 18.0)) for i, c in enumerate(number))
                out.append(Detection(digits[0].digit, 0.9, digits[0].bbox, (0.1,) * 10, digits))
            return out

    monkeypatch.setattr(detector_module, "Detector", Fake)
    photos = [DetPhoto(np.zeros((20, 40, 3), np.uint8), np.array([[4, 2, 12, 18], [14, 2, 22, 18]], np.float32),
                       np.array([1, 2]), "a.png"),
              DetPhoto(np.zeros((20, 40, 3), np.uint8), np.array([[4, 2, 12, 18]], np.float32), np.array([3]), "b.png")]
    rows, shown = numbers.numbers_table([Path("fp32.onnx"), Path("int8.onnx"), Path("one.onnx")], photos)
    shares = {r["model"]: r.get("same_number_as_first") for r in rows}
    assert shares == {"fp32.onnx --no-refine": None, "fp32.onnx": None, "int8.onnx --no-refine": 0.5,
                      "int8.onnx": 0.5, "one.onnx": None}
    assert rows[0]["number_accuracy"] == 1.0 and rows[-1]["engine"] == "fake"
    assert [d.number for d in shown] == ["12", "3"]  # the first model's reading, for the failure sheet
