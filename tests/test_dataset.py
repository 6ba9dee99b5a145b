"""Dataset building, synthetic photos, box-aware augmentation and previews."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from digitloc.annotations.dataset.augment import AugmentConfig, augment_batch, augment_geometry
from digitloc.annotations.dataset.cli import main
from digitloc.annotations.dataset.data import (
    BuildConfig,
    DataSet,
    DatasetError,
    Photo,
    build_dataset,
    crop_window,
    cut,
    split_of,
)
from digitloc.annotations.dataset.stats import BoxStats
from digitloc.annotations.dataset.synth import SynthConfig, synth_batch
from digitloc.runtime.contract import box_iou
from digitloc.runtime.number import DETECTOR_BOX_WIDTH

from helpers import make_svhn_folder


def _box_of(image: np.ndarray, threshold: int = 128) -> np.ndarray:
    ys, xs = np.nonzero(image[..., 0] > threshold)
    h, w = image.shape[:2]
    return np.array([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h])


@pytest.mark.parametrize("seed", range(20))
def test_geometric_augmentation_moves_the_box_with_the_digit(seed: int) -> None:
    # A bright "digit" whose pixels are known, on black; after any augmentation its
    # pixels must still fill the augmented box.
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 24:40] = 255
    box = np.array([24 / 64, 16 / 64, 40 / 64, 48 / 64], np.float32)
    cfg = AugmentConfig(scale=0.2, shift=0.1, rotate=0.0, shear=0.0)
    out, out_box = augment_geometry(image, box, cfg, np.random.default_rng(seed))
    assert box_iou(out_box, _box_of(out)) > 0.9
    # With rotation and shear the box is the hull of the moved inscribed ellipse: for a
    # digit drawn as that ellipse (a "0") it fits the moved ink tightly on every side.
    oval = np.zeros((64, 64, 3), np.uint8)
    cv2.ellipse(oval, (32, 32), (8, 16), 0, 0, 360, (255, 255, 255), -1)
    box = np.array([24 / 64, 16 / 64, 40 / 64, 48 / 64], np.float32)
    cfg = AugmentConfig(rotate=10.0, shear=0.05)
    out, out_box = augment_geometry(oval, box, cfg, np.random.default_rng(seed))
    assert np.abs(out_box - _box_of(out)).max() < 2.0 / 64
    assert box_iou(out_box, _box_of(out)) > 0.82  # one pixel of rasterisation either side


def test_size_option_reads_a_side_or_width_x_height() -> None:
    import click

    from digitloc.runtime.options import SIZE

    assert SIZE.convert("64", None, None) == (64, 64)  # one type from the parser on: (height, width)
    assert SIZE.convert("128x64", None, None) == (64, 128)  # WIDTHxHEIGHT in, (height, width) out
    assert SIZE.convert("48x48", None, None) == (48, 48)
    with pytest.raises(click.BadParameter, match="WIDTHxHEIGHT"):
        SIZE.convert("wide", None, None)
    with pytest.raises(click.BadParameter, match="positive"):
        SIZE.convert("0x64", None, None)


def test_rotation_does_not_widen_tall_boxes_on_average() -> None:
    # The hull of the rotated corners grows a tall box by h*sin(angle) a side (the old rule
    # taught boxes ~20 % too wide); the ellipse hull keeps the mean width near the ink's.
    image = np.zeros((64, 64, 3), np.uint8)
    cv2.ellipse(image, (32, 32), (6, 22), 0, 0, 360, (255, 255, 255), -1)
    box = np.array([26 / 64, 10 / 64, 39 / 64, 55 / 64], np.float32)
    cfg = AugmentConfig(scale=0.0, aspect=0.0, shift=0.0, rotate=8.0, shear=0.08)
    ratios = []
    for seed in range(40):
        out, out_box = augment_geometry(image, box, cfg, np.random.default_rng(seed))
        ink = _box_of(out)
        ratios.append((out_box[2] - out_box[0]) / (ink[2] - ink[0]))
    assert 0.9 < np.mean(ratios) < 1.1


def test_augment_batch_keeps_shapes_and_never_flips() -> None:
    rng = np.random.default_rng(0)
    images = np.zeros((8, 32, 32, 3), np.uint8)
    images[:, 8:24, 4:12] = 255  # a digit on the LEFT
    boxes = np.tile(np.array([4 / 32, 8 / 32, 12 / 32, 24 / 32], np.float32), (8, 1))
    out, out_boxes = augment_batch(images, boxes, AugmentConfig(invert_prob=0, grayscale_prob=0), rng)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.all((out_boxes[:, 0] + out_boxes[:, 2]) / 2 < 0.5)  # still on the left: no flips


def test_synthetic_photos_hold_their_box_and_are_deterministic() -> None:
    stats = BoxStats.default()
    cfg = SynthConfig(fonts=())  # Hershey faces only: always available
    samples = synth_batch(30, seed=3, stats=stats, cfg=cfg)
    assert len({d for d, _, _ in samples}) >= 5
    for digit, photo, box in samples:
        h, w = photo.shape[:2]
        assert 0 <= digit <= 9
        assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
        assert (box[3] - box[1]) / h > 0.15  # the digit is a real part of the photo
    # Deterministic for a seed.
    again = synth_batch(30, seed=3, stats=stats, cfg=cfg)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(samples, again, strict=True))
    # The glyph width factor narrows the digits (and their boxes) against the font's own width.
    wide = synth_batch(30, seed=3, stats=stats, cfg=SynthConfig(fonts=(), glyph_width=1.0, box_margin=0.06))

    def mean_share(batch: list) -> float:
        return float(np.mean([(b[2] - b[0]) / p.shape[1] for _, p, b in batch]))

    assert mean_share(samples) < 0.8 * mean_share(wide)


def test_crop_window_holds_the_digit_and_cuts_neighbours() -> None:
    from digitloc.annotations.check import ClippedBox

    boxes = [ClippedBox(1, 10, 10, 30, 50, 0), ClippedBox(2, 32, 10, 52, 50, 0), ClippedBox(3, 54, 10, 74, 50, 0)]
    photo = Photo("x/1.png", Path("1.png"), 90, 60, boxes)
    rng = np.random.default_rng(0)
    widths = []
    for _ in range(200):
        (x1, y1, x2, y2), (lo, hi) = crop_window(photo, 1, BoxStats.default(), rng)
        assert x1 <= 32 and x2 >= 52 and y1 <= 10 and y2 >= 50  # the digit is whole
        assert lo > 10 and hi < 74  # neither neighbour's pixels are kept whole
        widths.append((x2 - x1) / (y2 - y1))
    assert np.median(widths) > 1.5  # the window keeps a real one-digit photo's aspect (about 2)
    # --context: the neighbours stay whole (the photo's pixels across its width), the digit framed alike.
    for _ in range(50):
        (x1, y1, x2, y2), keep = crop_window(photo, 1, BoxStats.default(), rng, whole_neighbours="both")
        assert keep == (0, 90) and x1 <= 32 and x2 >= 52
        _, (lo, hi) = crop_window(photo, 1, BoxStats.default(), rng, whole_neighbours="right")
        assert lo > 10 and hi == 90  # the left neighbour cut as before, the right one whole


def test_cut_fills_outside_the_kept_range_without_neighbour_pixels() -> None:
    image = np.zeros((20, 60, 3), np.uint8)
    image[:, :20] = 255  # a bright "neighbour" on the left
    image[:, 20:40] = 100
    out = cut(image, (5, -5, 45, 25), keep=(22, 40))
    assert out.shape == (30, 40, 3)
    assert out.max() <= 100  # nothing of the neighbour, nothing invented brighter than the kept wall


def test_split_is_deterministic_and_order_free() -> None:
    shares = (0.6, 0.2, 0.2)
    names = [f"f/{i}.png" for i in range(300)]
    first = {n: split_of(n, shares, 7) for n in names}
    assert first == {n: split_of(n, shares, 7) for n in reversed(names)}
    counts = {s: list(first.values()).count(s) for s in ("train", "val", "test")}
    assert 140 < counts["train"] < 220 and counts["val"] > 30 and counts["test"] > 30


def _entries(n: int) -> list[dict]:
    out = []
    for i in range(n):
        boxes = [{"label": (i % 10) or 10, "left": 20, "top": 6, "width": 12, "height": 28}]
        if i % 2:
            boxes.append({"label": 3, "left": 34, "top": 6, "width": 12, "height": 28})
        out.append({"filename": f"{i}.png", "boxes": boxes})
    return out


def test_build_keeps_photos_in_one_split_and_counts_drops(tmp_path: Path) -> None:
    entries = _entries(40)
    entries.append({"filename": "gone.png", "boxes": entries[0]["boxes"]})
    entries.append({"filename": "zero.png", "boxes": [{"label": 4, "left": 3, "top": 3, "width": 0,
                                                        "height": 9}]})
    folder = make_svhn_folder(tmp_path / "svhn", [e for e in entries if e["filename"] != "gone.png"])
    (folder / "digitStruct.json").write_text(json.dumps(entries))
    cfg = BuildConfig(svhn=[str(folder)], size=(32, 32), crops_per_digit=2, synthetic=20, workers=1,
                      one_digit_split=(0.5, 0.25, 0.25), multi_digit_split=(0.5, 0.25, 0.25))
    manifest = build_dataset(cfg, tmp_path / "out")
    sets = {s: DataSet.load(tmp_path / "out" / f"{s}.npz") for s in ("train", "val", "test")}
    photos = {s: {o for o in d.origins if not o.startswith("synth/")} for s, d in sets.items()}
    assert not photos["train"] & photos["val"] and not photos["train"] & photos["test"]
    assert not photos["val"] & photos["test"]
    assert manifest["dropped"] == {"bad image": 1, "photo with an empty or outside box": 1}
    assert manifest["splits"]["train"]["per_kind"]["synth"] == 20
    for data in sets.values():
        assert data.images.dtype == np.uint8 and data.images.shape[1:] == (32, 32, 3)
        assert np.all(data.boxes[:, :2] < data.boxes[:, 2:]) and data.boxes.min() >= 0 and data.boxes.max() <= 1
        assert set(np.unique(data.labels)) <= set(range(10))
    # Boxes sit on the dark digit rectangles of the photos.
    real = sets["train"].select(sets["train"].kinds != "synth")
    for img, box in zip(real.images, real.boxes, strict=True):
        x1, y1, x2, y2 = (box * 32).round().astype(int)
        assert img[y1 + 2:y2 - 2, x1 + 1:x2 - 1].mean() < 90
    # A second build refuses to overwrite without force.
    with pytest.raises(FileExistsError):
        build_dataset(cfg, tmp_path / "out")


def test_build_at_a_non_square_size(tmp_path: Path) -> None:
    folder = make_svhn_folder(tmp_path / "svhn", _entries(12))
    result = CliRunner().invoke(main, ["build", "--svhn", str(folder), "--crops-per-digit", "1", "--synthetic", "8",
                                       "--size", "64x32", "--context", "0.5", "--workers", "1", "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    train = DataSet.load(tmp_path / "out" / "train.npz")
    assert train.images.shape[1:] == (32, 64, 3)  # WIDTHxHEIGHT 64x32: 32 rows of 64 pixels
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["size"] == [32, 64] and manifest["config"]["context"] == 0.5


def test_wholly_unusable_source_fails_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "digitStruct.json").write_text(json.dumps([{"filename": "nope.png", "boxes": []}]))
    with pytest.raises(DatasetError, match="no usable photo"):
        build_dataset(BuildConfig(svhn=[str(folder)], workers=1), tmp_path / "out")
    result = CliRunner().invoke(main, ["build", "--svhn", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "missing: not a folder" in result.output


def test_build_and_preview_on_the_real_sample(svhn_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["build", "--svhn", str(svhn_sample), "--crops-per-digit", "1",
                                       "--synthetic", "300", "--size", "32", "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    val, test = manifest["splits"]["val"], manifest["splits"]["test"]
    # All 272 one-digit photos are held out for evaluation by default.
    assert val["per_kind"]["real"] + test["per_kind"]["real"] == 272
    assert "real" not in manifest["splits"]["train"]["per_kind"]
    # Synthetic digits take the width share of real one-digit photos (0.198 mean on this sample).
    train, held = DataSet.load(out / "train.npz"), DataSet.load(out / "val.npz")
    synth = train.boxes[train.kinds == "synth"]
    real = held.boxes[held.kinds == "real"]
    share = float(np.mean(synth[:, 2] - synth[:, 0])) / float(np.mean(real[:, 2] - real[:, 0]))
    assert 0.85 < share < 1.15, share
    shares = manifest["splits"]["train"]["box_share_per_kind"]["synth"]
    assert shares["width"] == pytest.approx(float(np.mean(synth[:, 2] - synth[:, 0])), abs=1e-4)
    assert 0.5 < manifest["real_one_digit_stats"]["rel_h"][2] < 0.9
    grid = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["preview", str(out / "val.npz"), "--kind", "real", "-o", str(grid)])
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(grid))
    assert image is not None and image.shape[0] >= 96


def test_a_photo_with_any_bad_box_is_dropped_whole_never_relabelled(tmp_path: Path) -> None:
    """A "19" whose 1 has label 11, one with a non-numeric box, one with an empty box, and a name
    that leaves the folder: each photo is dropped and counted, none becomes a one-digit photo."""
    nine = {"label": 9, "left": 34, "top": 6, "width": 12, "height": 28}
    entries = _entries(30) + [
        {"filename": "label11.png", "boxes": [{"label": 11, "left": 20, "top": 6, "width": 12, "height": 28}, nine]},
        {"filename": "text.png", "boxes": [{"label": 1, "left": 20, "top": 6, "width": 12, "height": 28}, nine]},
        {"filename": "empty.png", "boxes": [{"label": 1, "left": 20, "top": 6, "width": 0, "height": 28}, nine]},
    ]
    folder = make_svhn_folder(tmp_path / "svhn", entries)
    entries[-2]["boxes"][0]["left"] = "x"
    outside = make_svhn_folder(tmp_path / "secret", [{"filename": "s.png", "boxes": [nine]}])
    entries.append({"filename": "../secret/s.png", "boxes": [nine]})
    entries.append({"filename": str((outside / "s.png").resolve()), "boxes": [nine]})
    (folder / "digitStruct.json").write_text(json.dumps(entries))
    cfg = BuildConfig(svhn=[str(folder)], size=(32, 32), crops_per_digit=1, workers=1,
                      one_digit_split=(0.4, 0.3, 0.3), multi_digit_split=(0.4, 0.3, 0.3))
    manifest = build_dataset(cfg, tmp_path / "out")
    assert manifest["dropped"] == {"photo with a bad box": 2, "photo with an empty or outside box": 1, "bad image": 2}
    origins = set()
    for split in ("train", "val", "test"):
        origins |= set(DataSet.load(tmp_path / "out" / f"{split}.npz").origins)
    assert origins == {f"svhn/{i}.png" for i in range(30)}
    assert any("points outside the folder" in p for p in manifest["problems"])
    # digitloc-data check names them too, and fails.
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 1 and "'../secret/s.png' points outside the folder" in result.output


def test_check_of_no_records_and_an_unwritable_output_fail_in_one_line(tmp_path: Path) -> None:
    folder = make_svhn_folder(tmp_path / "svhn", _entries(6))
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "digitStruct.json").write_text("[]")
    result = CliRunner().invoke(main, ["check", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'none' / 'digitStruct.json'}: holds no records"
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file" / "out", Path("/proc/digitloc-out")):
        result = CliRunner().invoke(main, ["build", "--svhn", str(folder), "--workers", "1", "-o", str(bad)])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # fail(), not an uncaught error
        assert re.fullmatch(rf"error: {re.escape(str(bad))}: cannot write there \([A-Za-z][^()\n]*\)\n", result.output)


def test_detection_builds_with_other_seeds_keep_the_same_validation_photos(tmp_path: Path, tiny_onnx: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from digitloc.annotations.dataset.detection import build_photos, validation_photos
    from digitloc.benchmarks.cli import main as bench

    entries = [{"filename": f"{i}.png", "boxes": [{"label": 1 + i % 9, "left": 10 + i, "top": 8, "width": 12,
                                                    "height": 24}, {"label": 10, "left": 40, "top": 8, "width": 12,
                                                                    "height": 24}]} for i in range(16)]
    folder = make_svhn_folder(tmp_path / "svhn", entries, size=(48, 100))
    builds = {}
    for seed in (1, 2):
        out = tmp_path / f"det{seed}"
        result = CliRunner().invoke(main, ["detection", "--svhn", str(folder), "--samples", "6", "--size", "64x32",
                                           "--val-share", "0.3", "--seed", str(seed), "--workers", "1", "-o",
                                           str(out)])
        assert result.exit_code == 0, result.output
        builds[seed] = json.loads((out / "manifest.json").read_text())
        assert builds[seed]["config"]["split_seed"] == 0
    val = {s: sorted(p.origin for p in validation_photos(tmp_path / f"det{s}")) for s in builds}
    assert val[1] == val[2] and 0 < len(val[1]) == builds[1]["val_photos"] < 16
    assert not np.array_equal(np.load(tmp_path / "det1" / "train.npz")["images"],
                              np.load(tmp_path / "det2" / "train.npz")["images"])
    # digitloc-bench photos reads exactly those photos, and says where the wrong numbers go wrong.
    out = tmp_path / "bench"
    result = CliRunner().invoke(bench, ["photos", str(tiny_onnx), "--validation-of", str(tmp_path / "det1"),
                                        "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "photos.json").read_text())
    assert payload["photos"] == len(val[1]) and "validation photos of" in payload["source"]
    assert payload["numbers"][0]["errors"]["wrong_numbers"] == len(payload["numbers"][0]["failures"])
    assert "Where the wrong numbers go wrong" in (out / "photos.md").read_text()
    # ... and by the photo's size where the digits are (the tallest digit's height in its pixels), every photo once.
    by_px = payload["numbers"][0]["by_pixels"]
    assert sum(b["photos"] for b in by_px) == payload["photos"] and all(b["pixels"].endswith(" px") for b in by_px)
    assert "the tallest digit's height in the photo's own pixels" in (out / "photos.md").read_text()
    assert payload["box_width"] == DETECTOR_BOX_WIDTH
    assert f"boxes widened x{DETECTOR_BOX_WIDTH:g}" in (out / "photos.md").read_text()
    from digitloc.runtime.detector import Detector

    widths: list[float | None] = []
    made = Detector.__init__

    def spy(self: Detector, *args: object, **kwargs: object) -> None:
        widths.append(kwargs.get("box_width"))  # type: ignore[arg-type]
        made(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Detector, "__init__", spy)
    own = CliRunner().invoke(bench, ["photos", str(tiny_onnx), "--validation-of", str(tmp_path / "det1"),
                                     "--box-width", "1", "-o", str(tmp_path / "own")])
    assert own.exit_code == 0 and json.loads((tmp_path / "own" / "photos.json").read_text())["box_width"] == 1.0
    assert widths == [1.0]  # the width reaches the Detector that reads the photos
    monkeypatch.undo()
    both = CliRunner().invoke(bench, ["photos", str(tiny_onnx), "--validation-of", str(tmp_path / "det1"),
                                      "--svhn", str(folder), "-o", str(tmp_path / "b2")])
    assert both.exit_code != 0 and "one of the three" in both.output
    held = CliRunner().invoke(bench, ["photos", str(tiny_onnx), "--validation-of", str(tmp_path / "det1"),
                                      "--held-out-only", "-o", str(tmp_path / "b3")])
    assert held.exit_code != 0 and "does not go with --validation-of" in held.output
    # --training-of reads the build's other photos: those its samples were composed from, none of the validation's.
    trained = CliRunner().invoke(bench, ["photos", str(tiny_onnx), "--training-of", str(tmp_path / "det1"),
                                         "-o", str(tmp_path / "trained")])
    assert trained.exit_code == 0, trained.output
    payload = json.loads((tmp_path / "trained" / "photos.json").read_text())
    assert "training photos of" in payload["source"] and payload["photos"] == builds[1]["train_photos"]
    assert payload["photos"] + len(val[1]) == 16
    assert not {p.origin for p in build_photos(tmp_path / "det1", "training")} & set(val[1])
    two = CliRunner().invoke(bench, ["misses", str(tiny_onnx), "--training-of", str(tmp_path / "det1"),
                                     "--validation-of", str(tmp_path / "det1"), "-o", str(tmp_path / "b4")])
    assert two.exit_code != 0 and "one of the three" in two.output
    # scripts/refine_share_sweep.py reads the same photos through the runtime, once per share and once in one pass.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from refine_share_sweep import main as sweep
    finally:
        sys.path.pop(0)
    swept = CliRunner().invoke(sweep, [str(tiny_onnx), "--validation-of", str(tmp_path / "det1"), "--shares", "0.3,0.5",
                                       "-o", str(tmp_path / "sweep")])
    assert swept.exit_code == 0, swept.output
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["rows"]
    assert [r["refine_share"] for r in rows] == [None, 0.3, 0.5] and {r["photos"] for r in rows} == {len(val[1])}
    swept_dir = tmp_path / "sweep"
    assert (swept_dir / "sweep.png").stat().st_size > 0 and "| one pass |" in (swept_dir / "sweep.md").read_text()
    again = CliRunner().invoke(sweep, [str(tiny_onnx), "--validation-of", str(tmp_path / "det1"), "-o", str(swept_dir)])
    assert again.exit_code != 0 and "use --force" in again.output
    bad = CliRunner().invoke(sweep, [str(tiny_onnx), "--validation-of", str(tmp_path / "det1"), "--shares", "0.3,1.2",
                                     "-o", str(tmp_path / "sweep2")])
    assert bad.exit_code != 0 and "within 0..1" in bad.output
    # --split-seed moves the split; a manifest from before split_seed existed splits on its seed.
    other = tmp_path / "det-split3"
    assert CliRunner().invoke(main, ["detection", "--svhn", str(folder), "--samples", "2", "--size", "64x32",
                                     "--val-share", "0.3", "--split-seed", "3", "--workers", "1", "-o",
                                     str(other)]).exit_code == 0
    moved = sorted(p.origin for p in validation_photos(other))
    assert moved != val[1]
    manifest = json.loads((other / "manifest.json").read_text())
    del manifest["config"]["split_seed"]
    manifest["config"]["seed"] = 3
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert sorted(p.origin for p in validation_photos(other)) == moved
    # A manifest whose folders no longer hold those photos, or of another kind of build, is one clear error.
    manifest["val_photos"] += 1
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="held out .* validation photos"):
        validation_photos(other)
    (other / "manifest.json").write_text(json.dumps({"config": {"seed": 0, "svhn": [str(folder)]}}))
    with pytest.raises(DatasetError, match="not a detection build's manifest"):
        validation_photos(other)


def test_folder_weights_draw_a_folder_s_photos_more_often(tmp_path: Path) -> None:
    from digitloc.annotations.dataset.detection import Composer, DetectionConfig, background_strips, load_photos

    entries = [{"filename": f"{i}.png", "boxes": [{"label": 1 + i, "left": 10, "top": 8, "width": 12,
                                                    "height": 24}]} for i in range(2)]
    photos = load_photos([str(make_svhn_folder(tmp_path / "svhn", entries, size=(48, 100)))], skip_held_out=False)
    rng = np.random.default_rng(0)
    even = Composer(photos, background_strips(photos), DetectionConfig(size=(32, 64)))
    assert even.draw is None  # equal weights: drawn as builds before weights were
    photos[1].weight = 9.0
    weighted = Composer(photos, background_strips(photos), DetectionConfig(size=(32, 64)))
    share = np.mean([weighted._photo(rng) is photos[1] for _ in range(2000)])
    assert 0.87 < share < 0.93
    result = CliRunner().invoke(main, ["detection", "--svhn", str(tmp_path / "svhn"), "--folder-weight", "1",
                                       "--folder-weight", "2", "--samples", "2", "-o", str(tmp_path / "d")])
    assert result.exit_code != 0 and "one positive weight per --svhn folder (1)" in result.output
    assert not (tmp_path / "d").exists()  # refused before any output folder is made


def test_synth_distractors_draw_ink_outside_every_digit_box_and_box_no_more(tmp_path: Path) -> None:
    from digitloc.annotations.dataset.detection import Composer, DetectionConfig, background_strips, load_photos

    entries = [{"filename": "0.png", "boxes": [{"label": 1, "left": 10, "top": 8, "width": 12, "height": 24}]}]
    photos = load_photos([str(make_svhn_folder(tmp_path / "svhn", entries, size=(48, 100)))], skip_held_out=False)

    def outside_ink(distractors: float, seed: int) -> tuple[float, int, int]:
        """The plate's ink outside the digits' boxes (share of all its ink), digits asked, boxes given."""
        composer = Composer(photos, background_strips(photos), DetectionConfig(size=(32, 64), distractors=distractors))
        rng = np.random.default_rng(seed)
        digits = rng.integers(0, 10, 3)
        _, alpha, boxes = composer.plate(rng, digits)
        inside = np.zeros(alpha.shape, bool)
        for x1, y1, x2, y2 in boxes.astype(int):
            inside[max(0, y1):y2 + 1, max(0, x1):x2 + 1] = True
        return float(alpha[~inside].sum() / alpha.sum()), len(digits), len(boxes)

    plain = [outside_ink(0.0, seed) for seed in range(12)]
    distracted = [outside_ink(1.0, seed) for seed in range(12)]
    assert all(asked == boxed for _, asked, boxed in plain + distracted)  # letters and frames are never boxed
    assert max(share for share, _, _ in plain) < 0.01  # without: the digits' ink is all inside their boxes
    assert min(share for share, _, _ in distracted) > 0.05  # with: every plate shows ink no box covers
    result = CliRunner().invoke(main, ["detection", "--svhn", str(tmp_path / "svhn"), "--synth-distractors", "1.5",
                                       "--samples", "2", "-o", str(tmp_path / "d")])
    assert result.exit_code != 0 and "--synth-distractors" in result.output and not (tmp_path / "d").exists()


def check_detection_option(tmp_path: Path, option: str, good: str, bad: str, key: str, recorded: float) -> None:
    """``digitloc-data detection OPTION GOOD`` builds and records ``key`` in the manifest; OPTION BAD is refused
    in one line naming the option, before any output folder is made."""
    boxes = [{"label": 1, "left": 10, "top": 8, "width": 12, "height": 24},
             {"label": 2, "left": 40, "top": 8, "width": 12, "height": 24}]
    many = make_svhn_folder(tmp_path / "many", [{"filename": f"{i}.png", "boxes": boxes} for i in range(12)],
                            size=(48, 100))
    result = CliRunner().invoke(main, ["detection", "--svhn", str(many), option, good, "--size", "64x32",
                                       "--val-share", "0.3", "--samples", "4", "--workers", "1", "-o",
                                       str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["config"][key] == recorded
    result = CliRunner().invoke(main, ["detection", "--svhn", str(many), option, bad, "--samples", "2",
                                       "-o", str(tmp_path / "e")])
    assert result.exit_code != 0 and option in result.output and not (tmp_path / "e").exists()


def test_detection_rotate_turns_samples_with_their_boxes_and_is_recorded(tmp_path: Path) -> None:
    from digitloc.annotations.dataset.detection import Composer, DetectionConfig, background_strips, load_photos

    entries = [{"filename": "0.png", "boxes": [{"label": 1, "left": 10, "top": 8, "width": 12, "height": 24}]}]
    photos = load_photos([str(make_svhn_folder(tmp_path / "svhn", entries, size=(48, 100)))], skip_held_out=False)
    composer = Composer(photos, background_strips(photos), DetectionConfig(size=(64, 128), rotate=30.0))
    canvas = np.full((64, 128, 3), 255, np.uint8)
    canvas[16:48, 56:72] = 0  # one dark "digit", its box 56..72 x 16..48
    turned = 0
    for seed in range(40):
        img, boxes, _ = composer._jitter(np.random.default_rng(seed), canvas, np.array([[56, 16, 72, 48]], np.float32),
                                         np.array([1]))
        ink = img.mean(axis=2) < 0.5 * float(np.median(img))
        ys, xs = np.nonzero(ink)
        x1, y1, x2, y2 = boxes[0]
        assert abs((x1 + x2) / 2 - xs.mean()) < 2.5 and abs((y1 + y2) / 2 - ys.mean()) < 2.5  # the box follows
        turned += int(abs(float(np.ptp(xs)) - 16) > 4)  # a turn of > ~8 degrees widens the ink's extent
    assert turned >= 5  # half the samples turn, by up to 30 degrees: many well past the default 5
    check_detection_option(tmp_path, "--rotate", "20", "90", "rotate", 20.0)


def test_detection_degrade_blurs_samples_keeps_boxes_and_leaves_default_builds_alone(tmp_path: Path) -> None:
    from digitloc.annotations.dataset.detection import (
        Composer,
        DetectionConfig,
        background_strips,
        degrade,
        load_photos,
    )

    entries = [{"filename": "0.png", "boxes": [{"label": 1, "left": 10, "top": 8, "width": 12, "height": 24}]}]
    photos = load_photos([str(make_svhn_folder(tmp_path / "svhn", entries, size=(48, 100)))], skip_held_out=False)
    canvas = np.zeros((64, 128, 3), np.uint8)
    canvas[:, ::2] = 255  # one-pixel stripes: all their energy at the highest frequency
    box, label = np.array([[56, 16, 72, 48]], np.float32), np.array([1])

    def sharpness(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img.astype(np.float32), axis=1)).mean())

    plain = Composer(photos, background_strips(photos), DetectionConfig(size=(64, 128), rotate=0.0))
    always = Composer(photos, background_strips(photos), DetectionConfig(size=(64, 128), rotate=0.0, degrade=1.0))
    for seed in range(6):
        out = degrade(canvas.astype(np.float32), np.random.default_rng(seed))
        assert out.shape == canvas.shape and out.dtype == np.float32
        assert sharpness(out) < 0.2 * sharpness(canvas)  # shrunk by at least 1.5: the stripes are gone

    class Counting:
        """A stand-in Generator that counts its draws and always draws the same: 0.99 (no chance taken), the low
        end of a range, zero noise; the count then depends on the options alone."""

        def __init__(self) -> None:
            self.draws = 0

        def random(self) -> float:
            self.draws += 1
            return 0.99

        def uniform(self, low: Any, high: Any = None, size: Any = None) -> Any:
            self.draws += 1
            return np.full(size, low, np.float64) if size is not None else low

        def normal(self, loc: float, scale: float, size: Any = None) -> Any:
            self.draws += 1
            return np.zeros(size)

        def integers(self, low: int, high: int | None = None, size: Any = None) -> Any:
            self.draws += 1
            return low

    def draws(degrade_share: float) -> int:
        composer = Composer(photos, background_strips(photos),
                            DetectionConfig(size=(64, 128), rotate=0.0, degrade=degrade_share))
        rng = Counting()
        composer._jitter(rng, canvas, box, label)  # type: ignore[arg-type]
        return rng.draws

    # At 0 (the default) no draw is made, so a build's samples are those of a build from before the option; any
    # share above 0 draws once more (and degrades that often: at 1.0, always, with draws of its own).
    assert draws(1e-12) == draws(0.0) + 1 and draws(1.0) > draws(1e-12)
    plain_sharp = np.mean([sharpness(plain._jitter(np.random.default_rng(s), canvas, box, label)[0]) for s in range(8)])
    sharp = np.mean([sharpness(always._jitter(np.random.default_rng(s), canvas, box, label)[0]) for s in range(8)])
    assert sharp < 0.8 * plain_sharp  # the degraded samples are the blurrier
    check_detection_option(tmp_path, "--degrade", "0.4", "1.5", "degrade", 0.4)


def test_detection_ignore_carries_unboxed_digits_into_training_samples_only(tmp_path: Path) -> None:
    from digitloc.annotations.dataset.detection import IGNORE_LABEL, val_photo

    boxes = [{"label": 1, "left": 10, "top": 8, "width": 12, "height": 24},
             {"label": 2, "left": 40, "top": 8, "width": 12, "height": 24}]
    folder = make_svhn_folder(tmp_path / "svhn", [{"filename": f"{i}.png", "boxes": boxes} for i in range(12)],
                              size=(48, 100))
    origins = [f"svhn/{i}.png" for i in range(12)]  # the origin is the folder's name and the file's
    held = [o for o in origins if val_photo(o, 0.3)]
    assert held and len(held) < 12
    regions = {o: [[70.0, 8.0, 82.0, 32.0]] for o in origins}  # an unboxed third digit on every photo
    regions["svhn/99.png"] = [[1.0, 1.0, 5.0, 5.0]]  # a photo the folder lacks
    (tmp_path / "ignore.json").write_text(json.dumps({"regions": regions}))
    args = ["detection", "--svhn", str(folder), "--size", "64x32", "--val-share", "0.3", "--samples", "8",
            "--mix", "photo=1", "--mix", "zoom=0", "--mix", "mosaic=0", "--mix", "crop=0", "--mix", "synth=0",
            "--mix", "empty=0", "--workers", "1"]
    result = CliRunner().invoke(main, [*args, "--ignore", str(tmp_path / "ignore.json"), "-o", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["ignore_regions"] == 12 - len(held) and manifest["ignore_boxes"] == 8  # one per whole photo
    assert manifest["digits"] == 16 and manifest["config"]["ignore"].endswith("ignore.json")
    assert manifest["ignore_photos_not_trained_on"] == len(held) + 1  # the validation photos' and the missing one
    train, val = np.load(tmp_path / "d" / "train.npz"), np.load(tmp_path / "d" / "val.npz")
    assert ((train["labels"] == IGNORE_LABEL).sum(axis=1) == 1).all()
    assert not (val["labels"] == IGNORE_LABEL).any()  # validation photos keep SVHN's labels alone
    for bad, message in (("[1, 2]", "not an ignore file"), (json.dumps({"regions": {"svhn/0.png": [[9, 8, 5, 30]]}}),
                                                            "x1 < x2")):
        (tmp_path / "bad.json").write_text(bad)
        result = CliRunner().invoke(main, [*args, "--ignore", str(tmp_path / "bad.json"), "-o", str(tmp_path / "e")])
        assert result.exit_code != 0 and message in result.output and not (tmp_path / "e").exists()
    # scripts/unboxed_digits.py keeps a confident digit apart from the boxed ones, not one over a boxed digit's centre.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        from unboxed_digits import unboxed
    finally:
        sys.path.pop(0)
    true = np.array([[10, 8, 22, 32], [40, 8, 52, 32]], np.float32)
    # apart; wide over the second digit's centre at IoU 0.08 (under 0.1: the IoU alone would keep it); apart but unsure
    pred = np.array([[70, 8, 82, 32], [25, 0, 100, 48], [85, 8, 95, 32]], np.float32)
    assert unboxed(pred, np.array([0.9, 0.9, 0.1]), true, 0.25, 0.1).tolist() == [[70, 8, 82, 32]]


def test_detection_mix_sets_the_kinds_shares(tmp_path: Path) -> None:
    from digitloc.annotations.dataset.detection import DetectionConfig, mix_with

    mix = mix_with({"synth": 0.05, "empty": 0})
    assert mix["synth"] == 0.05 and mix["empty"] == 0 and mix["photo"] == DetectionConfig().mix["photo"]
    for bad, message in (({"words": 1.0}, "no such kind"), ({"zoom": -1.0}, "0 or more"),
                         ({"zoom": float("nan")}, "0 or more"),
                         (dict.fromkeys(DetectionConfig().mix, 0.0), "every share is 0")):
        with pytest.raises(DatasetError, match=message):
            mix_with(bad)
    entries = [{"filename": f"{i}.png", "boxes": [{"label": 1 + i, "left": 10, "top": 8, "width": 12,
                                                    "height": 24}, {"label": 3, "left": 40, "top": 8, "width": 12,
                                                                    "height": 24}]} for i in range(16)]
    folder = make_svhn_folder(tmp_path / "svhn", entries, size=(48, 100))
    args = ["detection", "--svhn", str(folder), "--samples", "12", "--size", "64x32", "--val-share", "0.3",
            "--workers", "1"]
    result = CliRunner().invoke(main, [*args, "--mix", "photo=1", *(f"--mix={k}=0" for k in ("zoom", "mosaic", "crop",
                                                                                             "synth", "empty")),
                                       "-o", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["kinds"] == {"photo": 12} and manifest["config"]["mix"]["photo"] == 1.0
    for bad in ("synth", "synth=x", "letters=0.1"):
        result = CliRunner().invoke(main, [*args, "--mix", bad, "-o", str(tmp_path / "e")])
        assert result.exit_code != 0 and result.output.startswith("error: ") and "mix" in result.output, result.output
        assert not (tmp_path / "e").exists()  # refused before any output folder is made
