"""Build train/val/test sets from SVHN folders, one-digit crops and synthetic photos.

Every sample is the whole (possibly cropped or generated) photo passed through the
runtime's ``preprocess`` (stretched to the input size, RGB uint8), with its digit box
as x1, y1, x2, y2 relative to the photo. Splits are made per source photo, seeded
and order-independent, so one photo never feeds two splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitloc.annotations.check import ClippedBox, clip_to_image, find_annotations, photo_path, read_image
from digitloc.annotations.dataset.stats import BoxStats, Framing
from digitloc.annotations.dataset.synth import SynthConfig, find_fonts, synth_batch
from digitloc.annotations.digitstruct import AnnotationError, Problem, Record, read_annotations
from digitloc.runtime.contract import pixels_to_relative
from digitloc.runtime.fileio import OutputExistsError, atomic_path, atomic_write_text
from digitloc.runtime.preprocess import preprocess
from digitloc.runtime.progress import progress

SPLITS = ("train", "val", "test")
KIND_REAL = "real"  # a whole SVHN photo that holds exactly one digit
KIND_CROP = "crop"  # a window cut around one digit of an SVHN photo
KIND_SYNTH = "synth"  # a generated photo
KINDS = (KIND_REAL, KIND_CROP, KIND_SYNTH)
KIND_ALL = "all"  # every kind at once, where a command reads a kind
# Digit height shares of the framing evaluation: real photos hold digits from about 0.2 to 0.9.
FRAMING_SHARES = (0.2, 0.3, 0.45, 0.6, 0.75, 0.9)


class DatasetError(ValueError):
    """A source that cannot be used at all, or an output that cannot be written."""


@dataclass
class BuildConfig:
    """Everything that decides what a build makes; saved in its manifest."""

    svhn: list[str] = field(default_factory=list)
    size: tuple[int, int] = (64, 64)  # (height, width)
    seed: int = 0
    crops_per_digit: int = 4
    synthetic: int = 0
    font_dirs: list[str] = field(default_factory=list)
    glyph_width: float = SynthConfig.glyph_width  # synthetic glyph width factor (1.0: the font's own)
    box_margin: float = SynthConfig.box_margin  # synthetic box side margin (share of the digit height)
    framing: str = "sample"  # windows and synthetic photos framed as the sample's photos, or "wide" (any size/place)
    # Share of windows that show the neighbouring digits whole, as many real one-digit photos do
    # (the others show at most part of a neighbour); the target stays the digit they are cut around.
    context: float = 0.0
    # Which neighbours those windows show whole: "both" sides, or only those to the "right" (the
    # labelled digit of a real one-digit photo that shows several is mostly the leftmost).
    context_side: str = "both"
    # Shares of photos per split (train, val, test), for one-digit and for multi-digit photos.
    one_digit_split: tuple[float, float, float] = (0.0, 0.5, 0.5)
    multi_digit_split: tuple[float, float, float] = (0.9, 0.1, 0.0)
    workers: int = 2


@dataclass
class DataSet:
    """Arrays of one split, kept as uint8 images so that 50,000 samples fit in memory."""

    images: np.ndarray  # uint8 [N, S, S, 3] RGB
    boxes: np.ndarray  # float32 [N, 4] relative x1, y1, x2, y2
    labels: np.ndarray  # uint8 [N] digits 0-9
    kinds: np.ndarray  # str [N] real / crop / synth
    origins: np.ndarray  # str [N] source photo (folder/filename) or synth id

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, mask: np.ndarray) -> DataSet:
        return DataSet(self.images[mask], self.boxes[mask], self.labels[mask], self.kinds[mask],
                       self.origins[mask])

    def save(self, path: Path) -> None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, images=self.images, boxes=self.boxes, labels=self.labels, kinds=self.kinds,
                     origins=self.origins)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DataSet:
        """Load a split written by ``build_dataset`` (an .npz file)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["images"], data["boxes"].astype(np.float32), data["labels"],
                           data["kinds"], data["origins"])
        except FileNotFoundError:
            raise DatasetError(f"{path}: no such file") from None
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"{path}: not a digitloc dataset split ({exc})") from None

    @classmethod
    def concat(cls, parts: list[DataSet], size: tuple[int, int]) -> DataSet:
        if not parts:
            return cls(np.zeros((0, *size, 3), np.uint8), np.zeros((0, 4), np.float32),
                       np.zeros(0, np.uint8), np.zeros(0, "<U5"), np.zeros(0, "<U64"))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("images", "boxes", "labels", "kinds", "origins")))


def load_heldout(path: str | os.PathLike[str], kind: str = "real") -> DataSet:
    """Samples to score: a split .npz, or a dataset folder's val and test together; ``kind``
    keeps one kind of sample (real, crop, synth) or ``all``."""
    path = Path(path)
    if path.is_dir():
        parts = [DataSet.load(path / f"{s}.npz") for s in ("val", "test") if (path / f"{s}.npz").exists()]
        if not parts:
            raise DatasetError(f"{path}: holds no val.npz or test.npz")
    else:
        parts = [DataSet.load(path)]
    data = DataSet.concat(parts, parts[0].images.shape[1:3])
    if kind != "all":
        data = data.select(data.kinds == kind)
    if len(data) == 0:
        raise DatasetError(f"{path}: no samples of kind {kind}")
    return data


def split_of(origin: str, shares: tuple[float, float, float], seed: int) -> str:
    """The split of a source photo: a seeded hash of its name, independent of order."""
    digest = hashlib.sha256(f"{seed}:{origin}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(shares)
    if total <= 0:
        raise DatasetError(f"split shares {shares} add up to nothing")
    edge = 0.0
    for name, share in zip(SPLITS, shares, strict=True):
        edge += share / total
        if u < edge:
            return name
    return SPLITS[-1]


@dataclass
class Photo:
    """One readable SVHN photo with its clipped boxes."""

    origin: str
    path: Path
    width: int
    height: int
    boxes: list[ClippedBox]


def scan_svhn(folder: str | os.PathLike[str], problems: list[Problem], drops: Counter) -> list[Photo]:
    """Read an SVHN folder's annotations and image sizes; bad entries are reported and dropped."""
    folder = Path(folder)
    path = find_annotations(folder)
    before = len(problems)
    records: list[Record] = read_annotations(path, problems)
    if len(problems) > before:
        drops["photo with a bad box"] += len(problems) - before
    photos = []
    for record in progress(records, desc=f"scan {folder.name}", unit="photo"):
        try:
            image_path = photo_path(folder, record.filename)
            height, width = read_image(image_path).shape[:2]
        except ValueError as exc:
            problems.append(Problem(str(folder / record.filename), str(exc)))
            drops["bad image"] += 1
            continue
        boxes = [clip_to_image(box, width, height) for box in record.boxes]
        if not boxes or None in boxes:  # a photo missing one of its digits would be read as another number
            problems.append(Problem(str(image_path), f"photo dropped, empty or outside box: "
                                    f"{[b.xyxy for b, c in zip(record.boxes, boxes, strict=True) if c is None]}"))
            drops["photo with an empty or outside box" if boxes else "photo without boxes"] += 1
            continue
        photos.append(Photo(f"{folder.name}/{record.filename}", image_path, width, height, boxes))
    if not photos:
        raise DatasetError(f"{folder}: no usable photo (of {len(records)} annotated)")
    return photos


def measure_stats(photos: list[Photo]) -> BoxStats:
    """Box statistics of the one-digit photos (falls back to the recorded defaults when none)."""
    boxes = [(p.boxes[0].x1, p.boxes[0].y1, p.boxes[0].x2, p.boxes[0].y2, p.width, p.height)
             for p in photos if len(p.boxes) == 1]
    return BoxStats.from_boxes(boxes) if boxes else BoxStats.default()


def split_summary(data: DataSet) -> dict[str, Any]:
    """Counts per kind, class and source of one split, and its mean box shares per kind (the
    kinds should agree: a gap between synthetic and real boxes is a domain gap)."""
    def shares(kind: str) -> dict[str, float]:
        b = data.boxes[data.kinds == kind]
        return {"width": round(float(np.mean(b[:, 2] - b[:, 0])), 4), "height": round(float(np.mean(b[:, 3] - b[:, 1])), 4)}

    return {
        "samples": len(data),
        "photos": len({o for o in data.origins if not o.startswith("synth/")}),
        "per_kind": {k: int(v) for k, v in sorted(Counter(data.kinds.tolist()).items())},
        "per_class": {str(d): int((data.labels == d).sum()) for d in range(10)},
        "per_source": {k: int(v) for k, v in sorted(Counter(o.split("/")[0] for o in data.origins.tolist()).items())},
        "box_share_per_kind": {str(k): shares(k) for k in sorted(set(data.kinds.tolist()))},
    }


def _neighbour_range(photo: Photo, index: int, rng: np.random.Generator,
                     max_neighbour_share: float) -> tuple[float, float]:
    """The horizontal range of real pixels a window around box ``index`` may show: past it a
    neighbouring digit would show more than ``max_neighbour_share`` of its width."""
    box = photo.boxes[index]
    bw = box.x2 - box.x1
    lo, hi = 0.0, float(photo.width)
    for j, other in enumerate(photo.boxes):
        if j == index:
            continue
        ow = other.x2 - other.x1
        if other.x1 >= box.x2 - 0.3 * bw:
            hi = min(hi, other.x1 + rng.uniform(0.0, max_neighbour_share) * ow)
        elif other.x2 <= box.x1 + 0.3 * bw:
            lo = max(lo, other.x2 - rng.uniform(0.0, max_neighbour_share) * ow)
    return min(lo, box.x1), max(hi, box.x2)


def _kept_range(photo: Photo, index: int, rng: np.random.Generator, max_neighbour_share: float,
                whole_neighbours: str) -> tuple[float, float]:
    """The range of real pixels a window may show: neighbours cut (``_neighbour_range``), or kept
    whole on "both" sides or on the "right" only."""
    if whole_neighbours == "both":
        return 0.0, float(photo.width)
    if whole_neighbours not in ("", "right"):
        raise ValueError(f"whole_neighbours must be '', 'both' or 'right', not {whole_neighbours!r}")
    lo, hi = _neighbour_range(photo, index, rng, max_neighbour_share)
    return (lo, float(photo.width)) if whole_neighbours == "right" else (lo, hi)


def crop_window(photo: Photo, index: int, stats: BoxStats, rng: np.random.Generator,
                max_neighbour_share: float = 0.6, framing: Framing | None = None,
                whole_neighbours: str = "") -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """A window x1, y1, x2, y2 (pixels) holding box ``index`` whole, framed per ``framing``
    (default: like the digit of the sample's one-digit photos), and the horizontal range
    (lo, hi) of real pixels to keep.

    Outside (lo, hi) a neighbour would show more than ``max_neighbour_share`` of its width;
    ``cut`` fills those columns from the edge of the kept range instead, so the window keeps
    the real photos' aspect (digit about 0.2 of the width) without showing whole neighbours.
    With ``whole_neighbours`` ("both" or "right") the photo's own pixels are kept across its
    width, or to its right edge: the model then learns to pick the digit the photo is framed
    around among whole neighbours. A wide framing may reach past the photo: ``cut`` fills that too.
    """
    box = photo.boxes[index]
    bw, bh = box.x2 - box.x1, box.y2 - box.y1
    if framing is not None and framing.name != "sample":
        rel_h, cx, cy, aspect = framing.draw(stats, rng)
        lo, hi = _kept_range(photo, index, rng, max_neighbour_share, whole_neighbours)
        win_h = bh / rel_h
        win_w = max(win_h * aspect, bw + 2)
        y1 = (box.y1 + box.y2) / 2 - cy * win_h
        x1 = float(np.clip((box.x1 + box.x2) / 2 - cx * win_w, box.x2 - win_w, box.x1))
    else:
        win_h = min(bh / stats.draw_rel_h(rng), max(float(photo.height), bh))
        cy = float(np.clip(stats.draw(rng, "cy"), 0.3, 0.7))
        y1 = float(np.clip((box.y1 + box.y2) / 2 - cy * win_h, box.y2 - win_h, box.y1))
        y1 = float(np.clip(y1, min(0.0, box.y1), max(photo.height - win_h, box.y2 - win_h)))
        lo, hi = _kept_range(photo, index, rng, max_neighbour_share, whole_neighbours)
        cx = float(np.clip(stats.draw(rng, "cx"), 0.35, 0.65))
        win_w = max(win_h * float(np.clip(stats.draw(rng, "aspect"), 0.7, 3.2)), bw + 2)
        x1 = float(np.clip((box.x1 + box.x2) / 2 - cx * win_w, box.x2 - win_w, box.x1))
    window = (int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x1 + win_w)), int(np.ceil(y1 + win_h)))
    return window, (int(np.floor(lo)), int(np.ceil(hi)))


def cut(image: np.ndarray, window: tuple[int, int, int, int], keep: tuple[int, int] | None = None) -> np.ndarray:
    """The window of an image. Columns outside ``keep`` and parts outside the photo are filled
    by replicating the nearest kept pixels, blurred (more for wider fills) so they read as plain
    wall."""
    import cv2

    x1, y1, x2, y2 = window
    h, w = image.shape[:2]
    lo, hi = keep if keep is not None else (0, w)
    lo, hi = max(lo, 0, min(x1, w - 1)), min(hi, w, max(x2, 1))
    src = image[:, lo:hi]
    pad = (max(0, -y1), max(0, y2 - h), max(0, lo - x1), max(0, x2 - hi))
    if any(pad):
        filled = cv2.copyMakeBorder(src, *pad, cv2.BORDER_REPLICATE)
        fh, fw = filled.shape[:2]
        inside = np.zeros((fh, fw), bool)
        inside[pad[0]:fh - pad[1], pad[2]:fw - pad[3]] = True
        # Blurred at a small scale: wide fills can be thousands of pixels.
        f = max(1.0, max(fh, fw) / 96.0)
        small = cv2.resize(filled, (max(1, round(fw / f)), max(1, round(fh / f))), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), max(1.0, 0.15 * max(pad) / f))
        soft = cv2.resize(small, (fw, fh), interpolation=cv2.INTER_LINEAR)
        filled[~inside] = soft[~inside]
        src = filled
    top = y1 + pad[0]
    left = x1 - lo + pad[2]
    return src[top:top + (y2 - y1), left:left + (x2 - x1)]


def _sample(photo_bgr: np.ndarray, box_px: np.ndarray, digit: int, kind: str, origin: str,
            size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int, str, str]:
    h, w = photo_bgr.shape[:2]
    rel = np.clip(pixels_to_relative(box_px, w, h), 0.0, 1.0)
    return preprocess(photo_bgr, size), rel, digit, kind, origin


def _photo_samples(job: tuple[Photo, bool, int, BoxStats, int, int, Framing, float, str]) -> list:
    """Samples from one SVHN photo: the whole photo if it holds one digit, plus crops (``context``
    of them with whole neighbours, on ``side``)."""
    photo, whole, crops_per_digit, stats, size, seed, framing, context, side = job
    image = read_image(photo.path)
    out = []
    if whole:
        b = photo.boxes[0]
        out.append(_sample(image, np.array([b.x1, b.y1, b.x2, b.y2]), b.digit, KIND_REAL, photo.origin, size))
    rng = np.random.default_rng(seed)
    for i, b in enumerate(photo.boxes):
        for _ in range(crops_per_digit):
            context_window = context > 0 and rng.random() < context  # no draw at 0: older builds stay alike
            (x1, y1, x2, y2), keep = crop_window(photo, i, stats, rng, framing=framing,
                                                 whole_neighbours=side if context_window else "")
            box = np.array([b.x1 - x1, b.y1 - y1, b.x2 - x1, b.y2 - y1])
            out.append(_sample(cut(image, (x1, y1, x2, y2), keep), box, b.digit, KIND_CROP, photo.origin, size))
    return out


def _synth_samples(job: tuple[int, int, BoxStats, SynthConfig, int, int]) -> list:
    count, seed, stats, cfg, size, offset = job
    return [_sample(photo, box, digit, KIND_SYNTH, f"synth/{offset + i}", size)
            for i, (digit, photo, box) in enumerate(synth_batch(count, seed, stats, cfg))]


def _to_dataset(samples: list, size: tuple[int, int]) -> DataSet:
    if not samples:
        return DataSet.concat([], size)
    images, boxes, labels, kinds, origins = zip(*samples, strict=True)
    return DataSet(np.stack(images), np.stack(boxes).astype(np.float32), np.array(labels, np.uint8),
                   np.array(kinds), np.array(origins))


def _run(jobs: list, func, workers: int, desc: str, unit_counts: list[int]) -> list:
    """Run jobs (in worker processes when workers > 1) with a progress bar over samples."""
    results = []
    bar = progress(total=sum(unit_counts), desc=desc, unit="sample")
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for out, n in zip(pool.map(func, jobs, chunksize=max(1, len(jobs) // (8 * workers))), unit_counts, strict=True):
                results.extend(out)
                bar.update(n)
    else:
        for job, n in zip(jobs, unit_counts, strict=True):
            results.extend(func(job))
            bar.update(n)
    bar.close()
    return results


def build_dataset(cfg: BuildConfig, out_dir: str | os.PathLike[str], force: bool = False) -> dict:
    """Build the splits into ``out_dir`` (train/val/test .npz, manifest.json); returns the manifest."""
    out_dir = Path(out_dir)
    targets = [out_dir / f"{s}.npz" for s in SPLITS] + [out_dir / "manifest.json"]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise OutputExistsError(f"{existing[0]}: already exists (use --force to overwrite)")
    if not cfg.svhn and cfg.synthetic <= 0:
        raise DatasetError("nothing to build: give an SVHN folder and/or --synthetic N")
    problems: list[Problem] = []
    drops: Counter = Counter()
    photos: list[Photo] = []
    for folder in cfg.svhn:
        try:
            photos.extend(scan_svhn(folder, problems, drops))
        except AnnotationError as exc:
            raise DatasetError(str(exc)) from None
    stats = measure_stats(photos)
    try:
        framing = Framing.named(cfg.framing)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None

    per_split: dict[str, list[DataSet]] = {s: [] for s in SPLITS}
    photo_split: dict[str, str] = {}
    jobs, counts = [], []
    for k, photo in enumerate(photos):
        shares = cfg.one_digit_split if len(photo.boxes) == 1 else cfg.multi_digit_split
        split = split_of(photo.origin, shares, cfg.seed)
        photo_split[photo.origin] = split
        whole = len(photo.boxes) == 1
        # Crops are cut for training only: evaluation keeps to real photos as SVHN has them,
        # plus crops of held-out multi-digit photos (a second, larger check).
        crops = cfg.crops_per_digit if (split == "train" or not whole) else 0
        jobs.append((photo, whole, crops, stats, cfg.size, cfg.seed * 1_000_003 + k, framing, cfg.context,
                     cfg.context_side))
        counts.append(int(whole) + crops * len(photo.boxes))
    samples = _run(jobs, _photo_samples, cfg.workers, "svhn samples", counts)
    for split in SPLITS:
        chosen = [s for s in samples if photo_split[s[4]] == split]
        per_split[split].append(_to_dataset(chosen, cfg.size))

    if cfg.synthetic > 0:
        fonts = find_fonts(cfg.font_dirs)
        scfg = SynthConfig(fonts=tuple(fonts), glyph_width=cfg.glyph_width, box_margin=cfg.box_margin,
                           framing=framing, min_digit_height=12 if framing.name == "wide" else 0)
        chunk = 250
        sjobs = [(min(chunk, cfg.synthetic - o), cfg.seed * 7919 + o, stats, scfg, cfg.size, o)
                 for o in range(0, cfg.synthetic, chunk)]
        synth = _run(sjobs, _synth_samples, cfg.workers, "synthetic", [j[0] for j in sjobs])
        per_split["train"].append(_to_dataset(synth, cfg.size))
    else:
        fonts = []

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "config": asdict(cfg),
        "size": cfg.size,
        "box_format": "x1,y1,x2,y2 relative",
        "real_one_digit_stats": stats.summary(),
        "fonts": [Path(f).name for f in fonts],
        "splits": {},
        "dropped": dict(drops),
        "problems": [str(p) for p in problems[:50]],
        "problem_count": len(problems),
    }
    for split in SPLITS:
        data = DataSet.concat(per_split[split], cfg.size)
        data.save(out_dir / f"{split}.npz")
        manifest["splits"][split] = split_summary(data)
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


@dataclass
class FramedPhoto:
    """A held-out one-digit photo re-framed so its digit takes ``share`` of the height."""

    image: np.ndarray  # BGR uint8, native resolution
    box: np.ndarray  # x1, y1, x2, y2 pixels of ``image``
    digit: int
    share: float
    origin: str


def reframe(image: np.ndarray, box: ClippedBox, share: float, rng: np.random.Generator,
            shift: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """The photo re-framed so the digit is ``share`` of the height, its centre moved by up to
    ``shift`` of the window from the middle (never out of it), the photo's own aspect kept
    (within 1-3.5). Context comes from the photo where it has some; beyond it ``cut``'s
    blurred fill. Returns the window and the digit box in its pixels."""
    h, w = image.shape[:2]
    bw, bh = box.x2 - box.x1, box.y2 - box.y1
    win_h = bh / share
    win_w = max(win_h * float(np.clip(w / h, 1.0, 3.5)), bw + 2)
    cx = 0.5 + rng.uniform(-shift, shift)
    cy = 0.5 + rng.uniform(-shift, shift)
    x1 = float(np.clip((box.x1 + box.x2) / 2 - cx * win_w, box.x2 - win_w, box.x1))
    y1 = float(np.clip((box.y1 + box.y2) / 2 - cy * win_h, box.y2 - win_h, box.y1))
    window = (int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x1 + win_w)), int(np.ceil(y1 + win_h)))
    out = cut(image, window)
    return out, np.array([box.x1 - window[0], box.y1 - window[1], box.x2 - window[0], box.y2 - window[1]],
                         np.float32)


def one_digit_split_of(origin: str) -> str:
    """The split a default build puts the one-digit photo ``origin`` in."""
    return split_of(origin, BuildConfig.one_digit_split, BuildConfig.seed)


def held_out_photos(folders: list[str], split: tuple[str, ...] = ("val", "test")) -> list[Photo]:
    """The one-digit photos of ``folders`` that a default build holds out (its ``split``)."""
    problems: list[Problem] = []
    photos = []
    for folder in folders:
        try:
            photos.extend(scan_svhn(folder, problems, Counter()))
        except AnnotationError as exc:
            raise DatasetError(str(exc)) from None
    held = [p for p in photos if len(p.boxes) == 1 and one_digit_split_of(p.origin) in split]
    if not held:
        which = "" if set(split) >= set(SPLITS) else "held-out "
        raise DatasetError(f"{', '.join(folders)}: no {which}one-digit photo to evaluate")
    return held


def reframe_photos(held: list[Photo], shares: tuple[float, ...] = FRAMING_SHARES, seed: int = 0,
                   as_is: bool = False) -> list[FramedPhoto]:
    """Each photo re-framed at each share: the framing evaluation, deterministic for a seed. With
    ``as_is`` the photos themselves instead (``share`` is then the digit's own height share)."""
    out = []
    for k, photo in enumerate(held):
        image = read_image(photo.path)
        if as_is:
            b = photo.boxes[0]
            out.append(FramedPhoto(image, np.array([b.x1, b.y1, b.x2, b.y2], np.float32), b.digit,
                                   (b.y2 - b.y1) / photo.height, photo.origin))
            continue
        for j, share in enumerate(shares):
            rng = np.random.default_rng([seed, k, j])
            window, box = reframe(image, photo.boxes[0], share, rng)
            out.append(FramedPhoto(window, box, photo.boxes[0].digit, share, photo.origin))
    return out


def framing_photos(folders: list[str], shares: tuple[float, ...] = FRAMING_SHARES, seed: int = 0,
                   split: tuple[str, ...] = ("val", "test"), as_is: bool = False) -> list[FramedPhoto]:
    """The held-out one-digit photos of ``folders`` re-framed at each share (``reframe_photos``)."""
    return reframe_photos(held_out_photos(folders, split), shares, seed, as_is)


def framing_dataset(framed: list[FramedPhoto], size: tuple[int, int]) -> tuple[DataSet, np.ndarray]:
    """The framing evaluation as model inputs (stretched to ``size``) and each sample's share."""
    samples = [_sample(f.image, f.box, f.digit, KIND_REAL, f.origin, size) for f in framed]
    return _to_dataset(samples, size), np.array([f.share for f in framed], np.float32)
