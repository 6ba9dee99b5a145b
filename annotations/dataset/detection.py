"""Detection data: every digit of every photo as a target, on inputs framed as users frame them.

A sample is a letterboxed model input (RGB uint8 [H, W, 3], the runtime's ``letterbox``) with
all its digits' boxes (relative x1, y1, x2, y2) and classes. Samples are composed from real
photos in several ways, chosen at random per sample (``DetectionConfig.mix``):

- ``photo``: a whole photo letterboxed exactly as the runtime does it;
- ``zoom``: a photo shrunk onto real background cut from other photos (digit-free strips), so
  digits are small amid doors, windows and bricks;
- ``mosaic``: 2-4 photos tiled onto real background;
- ``crop``: a window of a photo; a digit cut by its edge is dropped if less than
  ``keep_visible`` of it shows, and kept (clipped) otherwise;
- ``synth``: a number of 1-5 rendered digits on a plate and a real background patch;
- ``empty``: background alone, no digit.

Then colour, blur, noise and a small rotation, the boxes moved with the pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from digitloc.annotations.check import read_image
from digitloc.annotations.dataset.augment import transform_box
from digitloc.annotations.dataset.data import DatasetError, Photo, one_digit_split_of, scan_svhn
from digitloc.annotations.dataset.synth import (
    RENDER_HEIGHT,
    SynthConfig,
    _background,
    _contrasting_colour,
    _pick_style,
    _render_digit,
    find_fonts,
    render_text,
)
from digitloc.annotations.digitstruct import AnnotationError, Problem
from digitloc.runtime.fileio import OutputExistsError, atomic_path, atomic_write_text
from digitloc.runtime.preprocess import LETTERBOX_FILL, letterbox_geometry
from digitloc.runtime.progress import progress

MAX_DIGITS = 24  # boxes per sample in the npz (padded with label -1)
# A region's label in train.npz for a real digit SVHN left unboxed (``--ignore``): neither a target nor background.
IGNORE_LABEL = -2
KINDS = ("photo", "zoom", "mosaic", "crop", "synth", "empty")
DISTRACTORS = ("suffix", "line", "frame")  # what a synthetic plate may show beside its number (distractors)
# Letters for them: not I, O, Q, Z (drawn as 1, 0 and 2 in some faces, they would teach that those digits are not
# digits); B, G and S stay on purpose: "11B" and street names put them beside real numbers.
UPPER = "ABCDEFGHJKLMNPRSTUVWXY"
# Each kind's share of the composed samples (relative; ``digitloc-data detection --mix`` sets some of them).
DEFAULT_MIX = {"photo": 0.22, "zoom": 0.25, "mosaic": 0.2, "crop": 0.1, "synth": 0.18, "empty": 0.05}


@dataclass
class DetPhoto:
    """A real photo in memory (BGR) with all its digits: pixel boxes [n, 4] and classes [n]."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    origin: str
    weight: float = 1.0  # how often the composer draws it, relative to the others (its folder's weight)


@dataclass
class DetectionConfig:
    """How detection samples are composed; saved in the manifest beside what it built."""

    svhn: tuple[str, ...] = ()
    size: tuple[int, int] = (96, 192)  # (height, width)
    count: int = 40000
    val_share: float = 0.1  # photos (by a seeded hash of the name) kept for validation and thresholds
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    zoom: tuple[float, float] = (0.3, 0.95)  # the photo's share of the input, zoom-out
    keep_visible: float = 0.7
    rotate: float = 5.0  # degrees
    synth_fonts: tuple[str, ...] = ()
    seed: int = 0  # the composition's random draws
    split_seed: int = 0  # which photos are kept for validation: a second build with another seed keeps the same
    folder_weights: tuple[float, ...] = ()  # per svhn folder: how often its photos are drawn (default 1 each)
    workers: int = 2
    # The chance that a synthetic number's plate also shows what is not a digit, unboxed: letters after the
    # number ("11B"), a line of letters above or below it (a street or house name), or a frame around it (a
    # plaque's edge); what the detector was seen to read as digits on real photos (session 19).
    distractors: float = 0.0
    # The chance that a sample is shrunk 1.5-4x and scaled back up (half of those JPEG-compressed between): a
    # small digit as the refine pass reads it, from a window cut around it and enlarged (session 22).
    degrade: float = 0.0
    # A JSON file of regions per training photo (scripts/unboxed_digits.py: digits read where SVHN boxed none) that
    # the samples carry as IGNORE_LABEL boxes; "" for none. Validation photos are never given any.
    ignore: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def val_photo(origin: str, share: float, seed: int = 0) -> bool:
    """Whether a photo is kept for validation: a seeded hash of its name, independent of order."""
    digest = hashlib.sha256(f"det{seed}:{origin}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def load_photos(folders: list[str] | tuple[str, ...], skip_held_out: bool = True) -> list[DetPhoto]:
    """Every readable photo of ``folders`` with all its digits. One-digit photos that the
    one-digit evaluation holds out (its val and test halves) are left out with ``skip_held_out``."""
    photos: list[Photo] = []
    problems: list[Problem] = []
    for folder in folders:
        try:
            photos.extend(scan_svhn(folder, problems, Counter()))
        except AnnotationError as exc:
            raise DatasetError(str(exc)) from None
    out = []
    for p in photos:
        if skip_held_out and len(p.boxes) == 1 and one_digit_split_of(p.origin) in ("val", "test"):
            continue
        boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in p.boxes], np.float32)
        labels = np.array([b.digit for b in p.boxes], np.int64)
        out.append(DetPhoto(read_image(p.path), boxes, labels, p.origin))
    return out


def build_photos(build: str | os.PathLike[str], split: str = "validation") -> list[DetPhoto]:
    """A detection build's (``digitloc-data detection``) whole photos, read again from the folders its
    manifest names: ``split`` "validation" (never trained on; stages and thresholds are chosen on them)
    or "training" (those its samples were composed from: a model reading them much better than the
    validation photos overfits, one reading them little better underfits)."""
    if split not in ("validation", "training"):
        raise ValueError(f"split must be validation or training, got {split!r}")
    path = Path(build) / "manifest.json"
    key = "val_photos" if split == "validation" else "train_photos"
    try:
        manifest = json.loads(path.read_text())
        config, expected = manifest["config"], int(manifest[key])
        folders, share = list(config["svhn"]), float(config["val_share"])
        split_seed = int(config.get("split_seed", config["seed"]))  # builds before split_seed split on their seed
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a detection build's manifest (digitloc-data detection): {exc!r}") from None
    held = split == "validation"
    photos = [p for p in load_photos(folders) if val_photo(p.origin, share, split_seed) == held]
    if len(photos) != expected:
        made = "held out" if held else "composed its samples from"
        raise DatasetError(f"{path}: the build {made} {expected} {split} photos, {len(photos)} are found in "
                           f"{', '.join(folders)} now (moved or changed folders?)")
    return photos


def validation_photos(build: str | os.PathLike[str]) -> list[DetPhoto]:
    """A detection build's validation photos (``build_photos``)."""
    return build_photos(build, "validation")


def background_strips(photos: list[DetPhoto], min_side: int = 12) -> list[np.ndarray]:
    """Digit-free parts of real photos: the strips left, right, above and below all digits."""
    strips = []
    for p in photos:
        h, w = p.image.shape[:2]
        x1, y1 = p.boxes[:, 0].min(), p.boxes[:, 1].min()
        x2, y2 = p.boxes[:, 2].max(), p.boxes[:, 3].max()
        for sx1, sy1, sx2, sy2 in ((0, 0, x1 - 1, h), (x2 + 1, 0, w, h), (0, 0, w, y1 - 1), (0, y2 + 1, w, h)):
            sx1, sy1, sx2, sy2 = (int(round(v)) for v in (sx1, sy1, sx2, sy2))
            if sx2 - sx1 >= min_side and sy2 - sy1 >= min_side:
                strips.append(p.image[sy1:sy2, sx1:sx2])
    if not strips:
        raise DatasetError("no digit-free background in the photos")
    return strips


class Composer:
    """Composes detection samples from real photos, their background and rendered numbers."""

    def __init__(self, photos: list[DetPhoto], strips: list[np.ndarray], cfg: DetectionConfig) -> None:
        if not photos:
            raise DatasetError("no photo to compose samples from")
        self.photos, self.strips, self.cfg = photos, strips, cfg
        self.synth = SynthConfig(fonts=tuple(cfg.synth_fonts))
        kinds = [k for k in KINDS if cfg.mix.get(k, 0) > 0]
        weights = np.array([cfg.mix[k] for k in kinds], np.float64)
        self.kinds, self.weights = kinds, weights / weights.sum()
        draw = np.array([p.weight for p in photos], np.float64)
        # Equal weights draw as before (the same seed, the same samples as builds before folder weights).
        self.draw = None if np.all(draw == draw[0]) else draw / draw.sum()

    # -- canvases -----------------------------------------------------------------------------
    def background(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """Real background (a digit-free strip, stretched and maybe flipped) of h x w, BGR."""
        strip = self.strips[rng.integers(len(self.strips))]
        sh, sw = strip.shape[:2]
        ch, cw = int(rng.integers(min(sh, 12), sh + 1)), int(rng.integers(min(sw, 12), sw + 1))
        y, x = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
        out = cv2.resize(strip[y: y + ch, x: x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
        return out[:, ::-1] if rng.random() < 0.5 else out

    @staticmethod
    def paste(canvas: np.ndarray, image: np.ndarray, boxes: np.ndarray, scale: float, x0: int, y0: int,
              keep_visible: float) -> tuple[np.ndarray, np.ndarray]:
        """Paste ``image`` scaled by ``scale`` at (x0, y0) (clipped to the canvas); its boxes moved, and
        a mask of the boxes kept (those at least ``keep_visible`` inside the canvas)."""
        ch, cw = canvas.shape[:2]
        h, w = image.shape[:2]
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        cx1, cy1, cx2, cy2 = max(x0, 0), max(y0, 0), min(x0 + nw, cw), min(y0 + nh, ch)
        if cx1 < cx2 and cy1 < cy2:
            canvas[cy1:cy2, cx1:cx2] = small[cy1 - y0: cy2 - y0, cx1 - x0: cx2 - x0]
        moved = boxes * np.float32(nw / w) + np.array([x0, y0, x0, y0], np.float32)
        clipped = np.clip(moved, 0, np.array([cw, ch, cw, ch], np.float32))
        area = np.maximum(moved[:, 2] - moved[:, 0], 1e-6) * np.maximum(moved[:, 3] - moved[:, 1], 1e-6)
        seen = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
        return clipped, seen / area >= keep_visible

    def _fit(self, rng: np.random.Generator, canvas: np.ndarray, photo: DetPhoto, region: tuple[int, int, int, int],
             share: float, centred: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Paste a photo into a region (x, y, w, h) of the canvas at ``share`` of the letterbox fit."""
        x, y, w, h = region
        scale = letterbox_geometry(photo.image.shape[:2], (h, w))[0] * share
        nw, nh = photo.image.shape[1] * scale, photo.image.shape[0] * scale
        if centred:
            x0, y0 = x + int((w - nw) // 2), y + int((h - nh) // 2)
        else:
            x0, y0 = x + int(rng.uniform(0, max(w - nw, 0) + 1)), y + int(rng.uniform(0, max(h - nh, 0) + 1))
        boxes, keep = self.paste(canvas, photo.image, photo.boxes, scale, x0, y0, self.cfg.keep_visible)
        return boxes[keep], photo.labels[keep]

    def _photo(self, rng: np.random.Generator) -> DetPhoto:
        if self.draw is None:
            return self.photos[rng.integers(len(self.photos))]
        return self.photos[rng.choice(len(self.photos), p=self.draw)]

    # -- kinds ----------------------------------------------------------------------------------
    def compose(self, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One sample: (BGR canvas of the input size, pixel boxes [n, 4], classes [n])."""
        h, w = self.cfg.size
        kind = kind or self.kinds[rng.choice(len(self.kinds), p=self.weights)]
        if kind == "photo":
            canvas = np.full((h, w, 3), LETTERBOX_FILL, np.uint8)
            boxes, labels = self._fit(rng, canvas, self._photo(rng), (0, 0, w, h), 1.0, centred=True)
        elif kind == "zoom":
            canvas = self.background(rng, h, w)
            boxes, labels = self._fit(rng, canvas, self._photo(rng), (0, 0, w, h), rng.uniform(*self.cfg.zoom))
        elif kind == "mosaic":
            canvas, boxes, labels = self._mosaic(rng, h, w)
        elif kind == "crop":
            canvas, boxes, labels = self._crop(rng, h, w)
        elif kind == "synth":
            canvas, boxes, labels = self._synth(rng, h, w)
        else:
            canvas, boxes, labels = self.background(rng, h, w), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        return self._jitter(rng, canvas, boxes, labels)

    def _mosaic(self, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        canvas = self.background(rng, h, w)
        layout = rng.integers(3)
        if layout == 0:  # side by side
            split = int(w * rng.uniform(0.35, 0.65))
            regions = [(0, 0, split, h), (split, 0, w - split, h)]
        elif layout == 1:  # 2 x 2
            sx, sy = int(w * rng.uniform(0.35, 0.65)), int(h * rng.uniform(0.35, 0.65))
            regions = [(0, 0, sx, sy), (sx, 0, w - sx, sy), (0, sy, sx, h - sy), (sx, sy, w - sx, h - sy)]
        else:  # one above the other
            split = int(h * rng.uniform(0.35, 0.65))
            regions = [(0, 0, w, split), (0, split, w, h - split)]
        all_boxes, all_labels = [], []
        for region in regions:
            b, lab = self._fit(rng, canvas, self._photo(rng), region, rng.uniform(0.7, 1.0))
            all_boxes.append(b)
            all_labels.append(lab)
        return canvas, np.concatenate(all_boxes), np.concatenate(all_labels)

    def _crop(self, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        photo = self._photo(rng)
        ph, pw = photo.image.shape[:2]
        cw = max(8, int(pw * rng.uniform(0.45, 0.9)))
        chh = max(8, int(min(ph, cw * h / w * rng.uniform(0.8, 1.3))))
        x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - chh + 1))
        image = photo.image[y: y + chh, x: x + cw]
        boxes = photo.boxes - np.array([x, y, x, y], np.float32)
        canvas = np.full((h, w, 3), LETTERBOX_FILL, np.uint8) if rng.random() < 0.5 else self.background(rng, h, w)
        # Boxes past the window's edge are clipped by paste() against the window: cut them first.
        inside = np.clip(boxes, 0, np.array([cw, chh, cw, chh], np.float32))
        area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6), axis=1)
        seen = np.prod(np.maximum(inside[:, 2:] - inside[:, :2], 0), axis=1) / area
        keep = seen >= self.cfg.keep_visible
        drop = (seen > 0) & ~keep  # digits mostly cut away: blur them out so no unlabelled digit remains
        if drop.any():
            image = image.copy()  # the photo itself stays as it is
        for x1, y1, x2, y2 in inside[drop].astype(int):
            if x2 > x1 and y2 > y1:
                image[y1:y2, x1:x2] = cv2.blur(image[y1:y2, x1:x2], (max(3, x2 - x1), max(3, y2 - y1)))
        window = DetPhoto(image, inside[keep], photo.labels[keep], photo.origin)
        b, lab = self._fit(rng, canvas, window, (0, 0, w, h), rng.uniform(0.85, 1.0))
        return canvas, b, lab

    def _synth(self, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A rendered number of 1-5 digits on a plate, placed on real background."""
        digits = rng.integers(0, 10, int(rng.choice([1, 2, 3, 4, 5], p=[0.2, 0.3, 0.3, 0.15, 0.05])))
        img, _, boxes = self.plate(rng, digits)
        gh = RENDER_HEIGHT
        canvas = self.background(rng, h, w)
        share = rng.uniform(0.12, 0.85)  # digit height as a share of the input height
        scale = min(share * h / gh, w / img.shape[1], h / img.shape[0])
        x0 = int(rng.uniform(0, max(w - img.shape[1] * scale, 0) + 1))
        y0 = int(rng.uniform(0, max(h - img.shape[0] * scale, 0) + 1))
        b, keep = self.paste(canvas, img, boxes, scale, x0, y0, self.cfg.keep_visible)
        return canvas, b[keep], digits[keep].astype(np.int64)

    def plate(self, rng: np.random.Generator, digits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``digits`` rendered in one style on a plate (with ``cfg.distractors``, sometimes letters or a frame
        beside them, unboxed): the plate image, its ink mask (0..1) and the digits' pixel boxes [n, 4]."""
        style = _pick_style(self.synth, rng)
        gh = RENDER_HEIGHT
        gap = gh * rng.uniform(0.04, 0.3)
        glyphs = []
        for d in digits:
            g = _render_digit(int(d), self.synth, rng, style)
            gw = max(2, int(round(g.shape[1] * gh / max(g.shape[0], 1) * style["stretch"])))
            glyphs.append(cv2.resize(g, (gw, gh), interpolation=cv2.INTER_AREA))
        # (no draw at 0, so that builds made before distractors existed come out the same)
        distractor = (str(rng.choice(DISTRACTORS)) if self.cfg.distractors > 0 and rng.random() < self.cfg.distractors
                      else "")
        suffix = [self._letters(rng, style, "".join(rng.choice(list(UPPER), int(rng.integers(1, 3)))), gh)
                  ] if distractor == "suffix" else []
        line = (self._letters(rng, style, "".join(rng.choice(list(UPPER), int(rng.integers(3, 9)))),
                              int(gh * rng.uniform(0.3, 0.6))) if distractor == "line" else None)
        pad_x, pad_y = int(gh * rng.uniform(0.1, 0.6)), int(gh * rng.uniform(0.08, 0.4))
        number_w = int(sum(g.shape[1] for g in glyphs + suffix) + gap * (len(glyphs) + len(suffix) - 1))
        total_w = max(number_w, line.shape[1] if line is not None else 0) + 2 * pad_x
        line_h = line.shape[0] + int(gh * 0.15) if line is not None else 0
        top = pad_y + (line_h if line is not None and rng.random() < 0.5 else 0)  # the line above or below
        plate = _background(gh + 2 * pad_y + line_h, total_w, rng)
        ink = _contrasting_colour(plate[top + gh // 2, pad_x], rng)
        alpha = np.zeros(plate.shape[:2], np.float32)
        boxes, x = [], float(pad_x)
        for i, g in enumerate(glyphs + suffix):
            xi = int(round(x))
            alpha[top: top + gh, xi: xi + g.shape[1]] = np.maximum(alpha[top: top + gh, xi: xi + g.shape[1]], g)
            if i < len(glyphs):  # the letters after the number are not boxed
                m = 0.03 * gh
                boxes.append([xi - m, top - m, xi + g.shape[1] + m, top + gh + m])
            x += g.shape[1] + gap
        if line is not None:
            ly = pad_y if top > pad_y else top + gh + int(gh * 0.15)
            lx = pad_x + int(rng.uniform(0, max(total_w - 2 * pad_x - line.shape[1], 0) + 1))
            alpha[ly: ly + line.shape[0], lx: lx + line.shape[1]] = np.maximum(
                alpha[ly: ly + line.shape[0], lx: lx + line.shape[1]], line)
        if distractor == "frame":  # a plaque's edge, a little inside the plate and outside every digit's box
            thickness = max(1, int(gh * rng.uniform(0.03, 0.1)))
            room = min(pad_x, pad_y) - int(np.ceil(0.03 * gh)) - 2  # plate edge to the nearest digit box, in pixels
            inset = int(max(room, 0) * rng.uniform(0.2, 0.7) / 2)
            t = max(1, min(thickness, room - inset))  # the line spreads both ways from its path: keep it in the room
            cv2.rectangle(alpha, (inset + t // 2, inset + t // 2),
                          (total_w - 1 - inset - t // 2, alpha.shape[0] - 1 - inset - t // 2), 1.0, t)
        img = np.clip(plate * (1 - alpha[:, :, None]) + ink * alpha[:, :, None], 0, 255).astype(np.uint8)
        return img, alpha, np.array(boxes, np.float32)

    def _letters(self, rng: np.random.Generator, style: dict, text: str, height: int) -> np.ndarray:
        """``text`` in the number's style, ``height`` pixels high: one mask of the word."""
        g = render_text(text, style, height)
        if g.size == 0:  # a font without these letters: a dash, still no digit
            g = np.ones((max(2, height // 8), max(2, height)), np.float32)
        gw = max(2, int(round(g.shape[1] * height / max(g.shape[0], 1) * style["stretch"] / self.synth.glyph_width)))
        return cv2.resize(g, (gw, height), interpolation=cv2.INTER_AREA)

    def _jitter(self, rng: np.random.Generator, canvas: np.ndarray, boxes: np.ndarray,
                labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Colour, blur, noise and a small rotation; boxes follow their inscribed ellipse."""
        h, w = canvas.shape[:2]
        img = canvas.astype(np.float32)
        if rng.random() < 0.5 and self.cfg.rotate > 0:
            angle = rng.uniform(-self.cfg.rotate, self.cfg.rotate)
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, rng.uniform(0.9, 1.1))
            img = cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            rel = boxes / np.array([w, h, w, h], np.float32)
            boxes = np.array([transform_box(b, matrix, (h, w)) for b in rel], np.float32).reshape(-1, 4)
            boxes = boxes * np.array([w, h, w, h], np.float32)
        img = img * rng.uniform(0.6, 1.4) + rng.uniform(-40, 40)
        img = img * rng.uniform(0.8, 1.2, 3)[None, None, :]
        if rng.random() < 0.15:
            img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
        if self.cfg.degrade > 0 and rng.random() < self.cfg.degrade:  # no draw at 0: builds as before
            img = degrade(img, rng)
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.4))
        if rng.random() < 0.3:
            img = img + rng.normal(0, rng.uniform(2, 10), img.shape).astype(np.float32)
        out = np.clip(img, 0, 255).astype(np.uint8)
        ok = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 3)
        return out, boxes[ok], labels[ok]


def degrade(img: np.ndarray, rng: np.random.Generator, factor: tuple[float, float] = (1.5, 4.0)) -> np.ndarray:
    """An image as if read from fewer pixels: each side shrunk by ``factor`` (area interpolation), half the time
    JPEG-compressed at quality 30-90, and scaled back to its size (linear interpolation), float32."""
    h, w = img.shape[:2]
    f = rng.uniform(*factor)
    small = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), (max(4, round(w / f)), max(4, round(h / f))),
                       interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
        small = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else small
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)


_COMPOSER: Composer | None = None  # one per worker process, set by _init_worker


def _init_worker(photos: list[DetPhoto], strips: list[np.ndarray], cfg: DetectionConfig) -> None:
    global _COMPOSER
    _COMPOSER = Composer(photos, strips, cfg)


def _compose_chunk(job: tuple[int, int]) -> tuple:
    start, count = job
    composer = _COMPOSER
    assert composer is not None, "worker not initialised"
    cfg = composer.cfg
    h, w = cfg.size
    images = np.empty((count, h, w, 3), np.uint8)
    boxes = np.zeros((count, MAX_DIGITS, 4), np.float32)
    labels = np.full((count, MAX_DIGITS), -1, np.int8)
    kinds = []
    for i in range(count):
        rng = np.random.default_rng([cfg.seed, start + i])
        kind = composer.kinds[rng.choice(len(composer.kinds), p=composer.weights)]
        canvas, b, lab = composer.compose(rng, kind)
        first = np.argsort(lab < 0, kind="stable")  # digits before ignored regions, should MAX_DIGITS cut
        b, lab = b[first], lab[first]
        n = min(len(b), MAX_DIGITS)
        images[i] = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        boxes[i, :n] = b[:n] / np.array([w, h, w, h], np.float32)
        labels[i, :n] = lab[:n]
        kinds.append(kind)
    return images, boxes, labels, np.array(kinds)


def photo_set(photos: list[DetPhoto], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Photos letterboxed as the runtime does it, every digit a target (the validation set)."""
    from digitloc.runtime.preprocess import letterbox

    h, w = size
    images = np.empty((len(photos), h, w, 3), np.uint8)
    boxes = np.zeros((len(photos), MAX_DIGITS, 4), np.float32)
    labels = np.full((len(photos), MAX_DIGITS), -1, np.int8)
    for i, p in enumerate(photos):
        images[i] = letterbox(p.image, size)
        scale, x, y, _, _ = letterbox_geometry(p.image.shape[:2], size)
        n = min(len(p.boxes), MAX_DIGITS)
        boxes[i, :n] = (p.boxes[:n] * scale + np.array([x, y, x, y], np.float32)) / np.array([w, h, w, h], np.float32)
        labels[i, :n] = p.labels[:n]
    return {"images": images, "boxes": boxes, "labels": labels, "origins": np.array([p.origin for p in photos]),
            "heights": np.array([p.image.shape[0] for p in photos], np.int32),
            "widths": np.array([p.image.shape[1] for p in photos], np.int32)}


def folder_weights(cfg: DetectionConfig) -> tuple[float, ...]:
    """One positive weight per svhn folder (1 each when none is given); DatasetError otherwise."""
    weights = cfg.folder_weights or (1.0,) * len(cfg.svhn)
    if len(weights) != len(cfg.svhn) or min(weights) <= 0:
        raise DatasetError(f"folder weights {list(weights)}: one positive weight per --svhn folder "
                           f"({len(cfg.svhn)})")
    return tuple(weights)


def mix_with(shares: dict[str, float]) -> dict[str, float]:
    """The composer's kinds and their shares: ``DEFAULT_MIX`` with ``shares`` set. A share is relative
    (the composer normalises them); 0 leaves a kind out. DatasetError for a kind the composer does not
    make, a negative share, or no share left above 0."""
    mix = dict(DEFAULT_MIX)
    for kind, share in shares.items():
        if kind not in KINDS:
            raise DatasetError(f"mix {kind}={share:g}: no such kind (kinds: {', '.join(KINDS)})")
        if not share >= 0:  # NaN too
            raise DatasetError(f"mix {kind}={share:g}: a share must be a number of 0 or more")
        mix[kind] = float(share)
    if not any(v > 0 for v in mix.values()):
        raise DatasetError("mix: every share is 0, nothing to compose")
    return mix


def load_ignore(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The regions of an ``--ignore`` file per photo origin, pixel boxes [n, 4]; refused in one line when the
    file cannot be read or holds no ``regions`` mapping."""
    try:
        data = json.loads(Path(path).read_text())
        regions = {str(k): np.asarray(v, np.float32) for k, v in data["regions"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not an ignore file of regions per photo ({exc})") from None
    for origin, boxes in regions.items():
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all(boxes[:, 2:] > boxes[:, :2])):
            raise DatasetError(f"{path}: {origin}'s regions are not x1, y1, x2, y2 boxes with x1 < x2 and y1 < y2")
    return {k: v.reshape(-1, 4) for k, v in regions.items()}


def with_ignored(photos: list[DetPhoto], regions: dict[str, np.ndarray]) -> tuple[list[DetPhoto], int]:
    """The photos with their ignore regions appended as IGNORE_LABEL boxes, and how many were appended (a
    region of a photo not among ``photos``, a validation photo say, is not)."""
    out, count = [], 0
    for p in photos:
        extra = regions.get(p.origin)
        if extra is None or not len(extra):
            out.append(p)
            continue
        h, w = p.image.shape[:2]
        extra = np.clip(extra, 0, np.array([w, h, w, h], np.float32))
        out.append(replace(p, boxes=np.concatenate([p.boxes, extra]).astype(np.float32),
                           labels=np.concatenate([p.labels, np.full(len(extra), IGNORE_LABEL)]).astype(p.labels.dtype)))
        count += len(extra)
    return out, count


def build_detection(cfg: DetectionConfig, out_dir: str | os.PathLike[str], force: bool = False) -> dict[str, Any]:
    """Build ``train.npz`` (composed samples) and ``val.npz`` (whole validation photos letterboxed)
    into ``out_dir`` with a manifest; the held-out one-digit photos are never used."""
    out = Path(out_dir)
    if (out / "manifest.json").exists() and not force:
        raise OutputExistsError(f"{out}: a dataset is already there (use --force to replace it)")
    weights = folder_weights(cfg)  # before any folder is made
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    for folder, weight in zip(cfg.svhn, weights, strict=True):
        photos += [replace(p, weight=float(weight)) for p in load_photos([folder])]
    val_of = {p.origin: val_photo(p.origin, cfg.val_share, cfg.split_seed) for p in photos}
    train = [p for p in photos if not val_of[p.origin]]
    val = [p for p in photos if val_of[p.origin]]
    if not train or not val:
        raise DatasetError(f"{', '.join(cfg.svhn)}: too few photos for a train / val split ({len(photos)})")
    ignored = unmatched = 0
    if cfg.ignore:
        regions = load_ignore(cfg.ignore)
        train, ignored = with_ignored(train, regions)
        unmatched = len(set(regions) - {p.origin for p in train})  # validation photos', or no photo's
    if not cfg.synth_fonts:
        cfg.synth_fonts = tuple(find_fonts())
    strips = background_strips(train)
    chunk = 500
    jobs = [(s, min(chunk, cfg.count - s)) for s in range(0, cfg.count, chunk)]
    parts = []
    with ProcessPoolExecutor(max_workers=max(1, cfg.workers), initializer=_init_worker,
                             initargs=(train, strips, cfg)) as pool:
        for part in progress(pool.map(_compose_chunk, jobs), total=len(jobs), desc="compose", unit="chunk"):
            parts.append(part)
    arrays = {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(("images", "boxes", "labels", "kinds"))}
    with atomic_path(out / "train.npz") as tmp:
        np.savez(tmp, **arrays)
    with atomic_path(out / "val.npz") as tmp:
        np.savez(tmp, **photo_set(val, cfg.size))
    manifest = {"config": cfg.to_dict(), "train_photos": len(train), "val_photos": len(val),
                "background_strips": len(strips), "samples": int(len(arrays["images"])),
                "kinds": dict(Counter(arrays["kinds"].tolist())),
                "digits": int((arrays["labels"] >= 0).sum()), "ignore_regions": ignored,
                "ignore_photos_not_trained_on": unmatched,
                "ignore_boxes": int((arrays["labels"] == IGNORE_LABEL).sum()),
                "classes": {str(c): int((arrays["labels"] == c).sum()) for c in range(10)}}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    preview_grid(arrays, out / "preview.png")
    return manifest


def preview_grid(data: dict[str, np.ndarray], path: Path, count: int = 24, columns: int = 4) -> Path:
    """A PNG grid of the first ``count`` samples with every box and class drawn (look before training); ignored
    regions (``--ignore``) in grey."""

    tiles = []
    for img, boxes, labels in zip(data["images"][:count], data["boxes"][:count], data["labels"][:count], strict=True):
        tile = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        h, w = tile.shape[:2]
        tile = cv2.resize(tile, (w * 2, h * 2), interpolation=cv2.INTER_NEAREST)
        for b, c in zip(boxes, labels, strict=True):
            if c < 0 and c != IGNORE_LABEL:
                continue
            x1, y1, x2, y2 = (int(v) for v in b * np.array([2 * w, 2 * h, 2 * w, 2 * h]))
            if c == IGNORE_LABEL:  # an unboxed digit, ignored: grey, no class
                cv2.rectangle(tile, (x1, y1), (x2, y2), (160, 160, 160), 1)
                continue
            cv2.rectangle(tile, (x1, y1), (x2, y2), (0, 0, 255), 1)
            cv2.putText(tile, str(int(c)), (x1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 0), 1)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i: i + columns]) for i in range(0, len(tiles), columns)])
    with atomic_path(path, suffix=".png") as tmp:
        cv2.imwrite(str(tmp), grid)
    return path


def load_detection(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A detection npz (images, boxes, labels ...) into memory; a DatasetError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (build it with digitloc-data detection)")
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    for key in ("images", "boxes", "labels"):
        if key not in data:
            raise DatasetError(f"{path}: not a detection dataset (no {key!r})")
    return data
