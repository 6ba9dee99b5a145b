"""Box-aware augmentation for training.

Every geometric change (scale, shift, rotation, shear) is one affine matrix applied to
the pixels AND to the box. The new box is the axis-aligned hull of the moved ellipse
inscribed in the old box, clipped to the image: the hull of the moved corners would
make a rotated tall digit's box w*cos(angle) + h*sin(angle) wide (+49 % for a 13x45
pixel digit turned by 8 degrees), and a model trained on such boxes learns boxes too wide for real
annotations, which are drawn around the visible glyph. Digits are never flipped
(a flipped 2 is no digit).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random changes; zero turns one off."""

    scale: float = 0.15  # zoom factor drawn from 1 +/- scale
    aspect: float = 0.25  # horizontal stretch exp(+/- aspect): photos come at many aspect ratios
    shift: float = 0.08  # translation as a share of the image size
    rotate: float = 8.0  # degrees
    shear: float = 0.08
    brightness: float = 0.25
    contrast: float = 0.3
    invert_prob: float = 0.1  # light digits on dark and the reverse both occur
    grayscale_prob: float = 0.1
    blur_prob: float = 0.2
    noise: float = 6.0
    lowres_prob: float = 0.25  # shrink and re-enlarge: many real digits are 15-30 px tall
    lowres_factor: float = 3.0  # largest shrink factor
    cutout_prob: float = 0.3  # one random patch painted over (random erasing), a regulariser
    cutout_size: float = 0.3  # largest patch side as a share of the image side
    expand: float = 1.0  # largest zoom-out factor ("expand"; 1: none): the photo shrinks onto a blurred canvas
    expand_prob: float = 0.3
    expand_min_height: float = 0.12  # a zoom-out never makes the digit shorter than this share of the height


def random_affine(size: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A 2x3 affine matrix about the image centre."""
    h, w = size
    scale = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
    angle = np.deg2rad(rng.uniform(-cfg.rotate, cfg.rotate))
    shear = rng.uniform(-cfg.shear, cfg.shear)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    stretch = np.exp(rng.uniform(-cfg.aspect, cfg.aspect))
    linear = np.array([[cos, -sin + shear], [sin, cos]], dtype=np.float64) @ np.diag([stretch, 1.0])
    centre = np.array([w / 2, h / 2])
    shift = rng.uniform(-cfg.shift, cfg.shift, 2) * np.array([w, h])
    offset = centre + shift - linear @ centre
    return np.hstack([linear, offset[:, None]])


def transform_box(box: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Move a relative x1, y1, x2, y2 box with a pixel-space affine matrix; clip to the image.

    The box's inscribed ellipse is moved and its axis-aligned hull returned: exact for
    scale, stretch and shift, and tight for rotation and shear (see the module note)."""
    h, w = size
    x1, y1, x2, y2 = np.asarray(box, np.float64) * np.array([w, h, w, h])
    centre = matrix[:, :2] @ np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + matrix[:, 2]
    semi = np.array([(x2 - x1) / 2, (y2 - y1) / 2])
    half = np.sqrt((matrix[:, :2] ** 2) @ (semi ** 2))  # hull of an ellipse under a linear map
    out = np.array([(centre[0] - half[0]) / w, (centre[1] - half[1]) / h,
                    (centre[0] + half[0]) / w, (centre[1] + half[1]) / h])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def augment_geometry(image: np.ndarray, box: np.ndarray, cfg: AugmentConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Warp the image and its relative box with one random affine (edges replicated)."""
    size = image.shape[:2]
    matrix = random_affine(size, cfg, rng)
    warped = cv2.warpAffine(image, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return warped, transform_box(box, matrix, size)


def augment_expand(image: np.ndarray, box: np.ndarray, cfg: AugmentConfig,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Zoom out: shrink the photo by up to ``cfg.expand`` onto a canvas of its own blurred,
    replicated edges, and place it so the digit lands anywhere the whole box still fits."""
    h, w = image.shape[:2]
    limit = min(cfg.expand, float(box[3] - box[1]) / cfg.expand_min_height)
    if limit <= 1.05:
        return image, box
    z = float(np.exp(rng.uniform(0.0, np.log(limit))))
    moved = (np.asarray(box, np.float64) - 0.5) / z + 0.5
    tx = rng.uniform(-moved[0], 1.0 - moved[2])
    ty = rng.uniform(-moved[1], 1.0 - moved[3])
    offset = np.array([(0.5 - 0.5 / z + tx) * w, (0.5 - 0.5 / z + ty) * h])
    matrix = np.hstack([np.eye(2) / z, offset[:, None]])
    warped = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.ones((h, w), np.uint8), matrix, (w, h), flags=cv2.INTER_NEAREST,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    soft = cv2.GaussianBlur(warped, (0, 0), max(2.0, 0.08 * w))
    warped[~inside] = soft[~inside]
    out = np.clip(moved + np.array([tx, ty, tx, ty]), 0.0, 1.0).astype(np.float32)
    return warped, out


def augment_photometric(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, inversion, grayscale, low resolution, blur, noise and one erased
    patch: the box is unchanged."""
    img = image.astype(np.float32)
    h, w = img.shape[:2]
    if rng.random() < cfg.lowres_prob:
        f = rng.uniform(1.5, max(cfg.lowres_factor, 1.5))
        small = cv2.resize(img, (max(4, round(w / f)), max(4, round(h / f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < cfg.grayscale_prob:
        img[:] = img.mean(axis=2, keepdims=True)
    if rng.random() < cfg.invert_prob:
        img = 255.0 - img
    mean = img.mean()
    img = (img - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    img = img * (1 + rng.uniform(-cfg.brightness, cfg.brightness))
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))
    if cfg.noise:
        img = img + rng.normal(0, rng.uniform(0, cfg.noise), img.shape).astype(np.float32)
    if rng.random() < cfg.cutout_prob:
        ph, pw = (max(1, round(s * rng.uniform(0.1, cfg.cutout_size))) for s in (h, w))
        y, x = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        img[y:y + ph, x:x + pw] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def augment_batch(images: np.ndarray, boxes: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Augment a uint8 [N, H, W, 3] batch and its relative [N, 4] boxes."""
    out_images = np.empty_like(images)
    out_boxes = np.empty_like(boxes, dtype=np.float32)
    for i in range(len(images)):
        img, box = augment_geometry(images[i], boxes[i], cfg, rng)
        if cfg.expand > 1.0 and rng.random() < cfg.expand_prob:
            img, box = augment_expand(img, box, cfg, rng)
        out_images[i] = augment_photometric(img, cfg, rng)
        out_boxes[i] = box
    return out_images, out_boxes
