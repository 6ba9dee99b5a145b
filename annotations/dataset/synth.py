"""Synthetic house-number photos with exactly known boxes.

Each photo holds one target digit (its box is measured from its own rendered
pixels, after every geometric change) and sometimes parts of neighbouring
digits cut by the photo's edge. Fonts: OpenCV's Hershey faces and any TrueType
font found (system fonts, matplotlib's DejaVu, or a folder the user gives).
Size and position follow the real one-digit statistics (``BoxStats``); colours,
plates, wall textures, perspective, lighting, blur, noise and JPEG vary.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from digitloc.annotations.dataset.stats import BoxStats, Framing

HERSHEY_FACES = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts")
RENDER_HEIGHT = 96  # digits are drawn this tall, then the photo is scaled to its native size


def find_fonts(extra_dirs: list[str] | None = None) -> list[str]:
    """TrueType/OpenType fonts that draw ten distinct digits, from the system and ``extra_dirs``."""
    dirs = [os.path.expanduser(d) for d in SYSTEM_FONT_DIRS] + list(extra_dirs or [])
    try:
        import matplotlib

        dirs.append(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf"))
    except ImportError:
        pass
    found = set()
    for d in dirs:
        for ext in ("ttf", "otf", "TTF", "OTF"):
            found.update(glob.glob(os.path.join(d, "**", f"*.{ext}"), recursive=True))
    unique: dict[str, str] = {}  # one file per font name (matplotlib ships DejaVu again)
    for f in sorted(found):
        unique.setdefault(os.path.basename(f).lower(), f)
    return sorted(f for f in unique.values() if _font_draws_digits(f))


@lru_cache(maxsize=256)
def _pil_font(path: str, size: int):  # PIL type stays optional
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


def _font_draws_digits(path: str) -> bool:
    """A font qualifies when its ten digits render non-empty and pairwise different."""
    try:
        masks = [_render_ttf(str(d), path, 32) for d in range(10)]
    except Exception:  # any font that PIL cannot use is skipped
        return False
    if any(m.sum() == 0 for m in masks):
        return False
    # Symbol fonts map digits to arrows, brackets or operators: wide or unevenly tall shapes.
    heights = [m.shape[0] for m in masks]
    if max(heights) > 1.6 * min(heights) or any(m.shape[1] > 1.05 * m.shape[0] for m in masks):
        return False
    shapes = {(m.shape, m.tobytes()) for m in masks}
    return len(shapes) == 10


def _render_ttf(text: str, path: str, height: int) -> np.ndarray:
    """A tight float mask (0..1) of ``text`` drawn with a TrueType font about ``height`` px tall."""
    from PIL import Image, ImageDraw

    font = _pil_font(path, int(height * 1.35))
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, font=font, fill=255)
    return _tight(np.asarray(canvas, dtype=np.float32) / 255.0)


def _render_hershey(text: str, face: int, height: int, thickness_share: float, italic: bool) -> np.ndarray:
    """A tight float mask of ``text`` in a Hershey face, about ``height`` px tall."""
    scale = cv2.getFontScaleFromHeight(face, height, 1)
    thickness = max(1, int(round(height * thickness_share)))
    (w, h), base = cv2.getTextSize(text, face | (cv2.FONT_ITALIC if italic else 0), scale, thickness)
    pad = thickness + 4
    canvas = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(canvas, text, (pad, pad + h), face | (cv2.FONT_ITALIC if italic else 0), scale, 255,
                thickness, cv2.LINE_AA)
    return _tight(canvas.astype(np.float32) / 255.0)


def _tight(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask > 0.5)
    if len(ys) == 0:
        return mask[:0, :0]
    return mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


@dataclass
class SynthConfig:
    """What varies in synthetic photos."""

    fonts: tuple[str, ...] = ()
    hershey_share: float = 0.35  # share of digits drawn with Hershey faces (all, when no fonts)
    neighbour_prob: float = 0.3  # chance of a (partly visible) neighbour on each side
    min_native_height: int = 22  # photos are rendered, then scaled to a native height in this range
    max_native_height: int = 110
    # Glyph width factor: SVHN's digits are narrower than font digits. At 1.0 the synthetic boxes
    # took 0.293 of the photo width (mean) against 0.198 in real one-digit photos and 0.179 in
    # windows; 0.68 (with box_margin 0.03) brings them to the real share.
    glyph_width: float = 0.68
    box_margin: float = 0.03  # side margin of the annotated box, as a share of the glyph height
    framing: Framing = Framing()  # digit size and place in the photo
    min_digit_height: int = 0  # native pixels (wide framing: 12, so a small digit stays readable)


def render_text(text: str, style: dict, height: int = RENDER_HEIGHT) -> np.ndarray:
    """A tight float mask of ``text`` in a ``_pick_style`` style (its font, or its Hershey face, stroke and slant)."""
    if style["font"] is None:
        return _render_hershey(text, style["face"], height, style["thickness"], style["italic"])
    return _render_ttf(text, style["font"], height)


def _render_digit(digit: int, cfg: SynthConfig, rng: np.random.Generator, style: dict) -> np.ndarray:
    return render_text(str(digit), style)


def _pick_style(cfg: SynthConfig, rng: np.random.Generator) -> dict:
    """Font or Hershey face, stroke, slant and the glyph's width / height distortion."""
    use_hershey = not cfg.fonts or rng.random() < cfg.hershey_share
    return {
        "font": None if use_hershey else cfg.fonts[rng.integers(len(cfg.fonts))],
        "face": HERSHEY_FACES[rng.integers(len(HERSHEY_FACES))],
        "thickness": float(rng.uniform(0.05, 0.16)),
        "italic": bool(rng.random() < 0.15),
        "stretch": cfg.glyph_width * float(np.exp(rng.normal(0, 0.18))),  # width / height of the glyph
    }


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour, often muted: house walls and plates are rarely saturated."""
    colour = rng.uniform(0, 255, 3)
    saturation = rng.uniform(0, 1) ** 1.5
    return (colour * saturation + colour.mean() * (1 - saturation)).astype(np.float32)


def _contrasting_colour(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour whose luminance differs from ``bg`` by at least a random margin."""
    lum = float(bg @ np.array([0.114, 0.587, 0.299], np.float32))
    margin = rng.uniform(45, 160)
    for _ in range(20):
        colour = _random_colour(rng)
        if abs(float(colour @ np.array([0.114, 0.587, 0.299], np.float32)) - lum) >= margin:
            return colour
    return np.full(3, 0.0 if lum > 127 else 255.0, np.float32)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A wall or plate: solid, gradient, brick-ish, wood-ish or blotchy texture (BGR float32)."""
    base = _random_colour(rng)
    kind = rng.integers(5)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    if kind == 1:  # linear gradient
        other = _random_colour(rng)
        t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        t = t[None, :, None] if len(t) == w else t[:, None, None]
        img = img * (1 - t) + other * t
    elif kind == 2:  # bricks / siding lines
        step = int(rng.integers(6, 30))
        line = _random_colour(rng) * 0.5 + base * 0.5
        for y in range(int(rng.integers(0, step)), h, step):
            img[y: y + max(1, step // 8)] = line
    elif kind == 3:  # wood-like stripes
        freq = rng.uniform(0.05, 0.4)
        ys = np.arange(h, dtype=np.float32)[:, None, None]
        img = img + 25 * np.sin(ys * freq + rng.uniform(0, 6))
    elif kind == 4:  # blotchy stone / stucco
        noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), rng.uniform(1, 6))
        img = img + (noise / (noise.std() + 1e-6) * rng.uniform(8, 35))[:, :, None]
    return img + rng.normal(0, rng.uniform(0, 6), img.shape).astype(np.float32)


def synth_photo(digit: int, stats: BoxStats, cfg: SynthConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One photo (BGR uint8, native size) and its digit box x1, y1, x2, y2 in pixels."""
    style = _pick_style(cfg, rng)
    glyph = _render_digit(digit, cfg, rng, style)
    gh = RENDER_HEIGHT
    gw = max(2, int(round(glyph.shape[1] * gh / max(glyph.shape[0], 1) * style["stretch"])))
    glyph = cv2.resize(glyph, (gw, gh), interpolation=cv2.INTER_AREA)

    rel_h, cx, cy, aspect = cfg.framing.draw(stats, rng)
    photo_h = int(round(gh / rel_h))
    photo_w = max(int(round(photo_h * aspect)), gw + 4)
    cx, cy = cx * photo_w, cy * photo_h
    x0 = int(np.clip(round(cx - gw / 2), 1, photo_w - gw - 1))
    y0 = int(np.clip(round(cy - gh / 2), 1, photo_h - gh - 1))

    target = np.zeros((photo_h, photo_w), np.float32)
    target[y0: y0 + gh, x0: x0 + gw] = glyph
    others = np.zeros_like(target)
    gap = int(gh * rng.uniform(0.05, 0.35))
    for side in (-1, 1):
        if rng.random() >= cfg.neighbour_prob:
            continue
        # A neighbour shows only in part (its near side), as where a plate or the photo ends.
        nb = _render_digit(int(rng.integers(10)), cfg, rng, style)
        nbw = max(2, int(round(nb.shape[1] * gh / max(nb.shape[0], 1) * style["stretch"])))
        nb = cv2.resize(nb, (nbw, gh), interpolation=cv2.INTER_AREA)
        shown = max(1, int(nbw * rng.uniform(0.15, 0.6)))
        nb = nb[:, nbw - shown:] if side < 0 else nb[:, :shown]
        nx = x0 - gap - shown if side < 0 else x0 + gw + gap
        lo, hi = max(nx, 0), min(nx + shown, photo_w)
        if lo < hi:
            others[y0: y0 + gh, lo:hi] = np.maximum(others[y0: y0 + gh, lo:hi], nb[:, lo - nx: hi - nx])

    # Plate behind the digits (sometimes), wall around it.
    bg = _background(photo_h, photo_w, rng)
    if rng.random() < 0.4:
        px1 = int(max(0, x0 - rng.uniform(0.1, 0.6) * gh))
        px2 = int(min(photo_w, x0 + gw + rng.uniform(0.1, 0.6) * gh))
        py1 = int(max(0, y0 - rng.uniform(0.05, 0.3) * gh))
        py2 = int(min(photo_h, y0 + gh + rng.uniform(0.05, 0.3) * gh))
        bg[py1:py2, px1:px2] = _background(py2 - py1, px2 - px1, rng)
    plate_colour = bg[int(y0 + gh / 2), int(x0 + gw / 2)]
    ink = _contrasting_colour(plate_colour, rng)
    alpha = np.maximum(target, others)[:, :, None]
    if rng.random() < 0.25:  # shadow or outline behind the ink
        shift = max(1, int(gh * rng.uniform(0.02, 0.06)))
        shadow = np.roll(np.roll(alpha, shift, 0), shift, 1)
        bg = bg * (1 - shadow) + _contrasting_colour(ink, rng) * shadow
    img = bg * (1 - alpha) + ink * alpha

    # Geometry: a mild perspective warp moves the target mask with the pixels.
    img, target = _perspective(img, target, rng)

    # Lighting, blur, native size, noise, JPEG.
    h, w = target.shape
    light = np.linspace(rng.uniform(0.5, 1.2), rng.uniform(0.7, 1.3), w if rng.random() < 0.5 else h,
                        dtype=np.float32)
    img = img * (light[None, :, None] if len(light) == w else light[:, None, None])
    low = max(cfg.min_native_height, min(int(np.ceil(cfg.min_digit_height / rel_h)), cfg.max_native_height))
    native_h = int(rng.integers(low, max(low, cfg.max_native_height) + 1))
    scale = native_h / h
    native_w = max(8, int(round(w * scale)))
    img = cv2.resize(img, (native_w, native_h), interpolation=cv2.INTER_AREA)
    target = cv2.resize(target, (native_w, native_h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.3))
    img = img + rng.normal(0, rng.uniform(0, 10), img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 95))])
        if ok:
            out = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return out, _annotator_box(_mask_box(target), out.shape[1], out.shape[0], cfg.box_margin)


def _annotator_box(box: np.ndarray, width: int, height: int, side: float) -> np.ndarray:
    """Loosen an ink-tight box the way SVHN's annotators drew theirs (a small margin)."""
    h = box[3] - box[1]
    margin = np.array([-side * h, -0.03 * h, side * h, 0.03 * h], np.float32)
    return np.clip(box + margin, 0, [width, height, width, height]).astype(np.float32)


def _perspective(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = rng.normal(0, 0.035, (4, 2)) * np.float32([w, h])
    angle = np.deg2rad(rng.normal(0, 5))
    centre = np.float32([w / 2, h / 2])
    rot = np.float32([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = ((src - centre) @ rot.T + centre + jitter).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    img = cv2.warpPerspective(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpPerspective(mask, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return img, mask


def _mask_box(mask: np.ndarray) -> np.ndarray:
    """The pixel box x1, y1, x2, y2 of a mask's ink (exclusive right/bottom edges)."""
    ys, xs = np.nonzero(mask > 0.35)
    if len(ys) == 0:
        raise ValueError("the digit left the photo")
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def synth_batch(count: int, seed: int, stats: BoxStats, cfg: SynthConfig,
                ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``count`` synthetic (digit, photo, pixel box) triples, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        digit = int(rng.integers(10))
        try:
            photo, box = synth_photo(digit, stats, cfg, rng)
        except ValueError:
            continue
        out.append((digit, photo, box))
    return out
