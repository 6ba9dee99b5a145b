"""Geometry statistics of real one-digit photos, which crops and synthetic photos imitate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class BoxStats:
    """Distributions (as samples) of where and how large the digit is in a one-digit photo.

    rel_h: box height / photo height; cx, cy: box centre / photo size; aspect: photo
    width / height; box_aspect: box width / height.
    """

    rel_h: tuple[float, ...]
    cx: tuple[float, ...]
    cy: tuple[float, ...]
    aspect: tuple[float, ...]
    box_aspect: tuple[float, ...]

    @classmethod
    def from_boxes(cls, boxes: list[tuple[float, float, float, float, int, int]]) -> BoxStats:
        """From (x1, y1, x2, y2, width, height) of the digit box in pixel photos."""
        if not boxes:
            raise ValueError("no one-digit photos to measure statistics on")
        arr = np.asarray(boxes, dtype=np.float64)
        x1, y1, x2, y2, w, h = arr.T
        bw, bh = x2 - x1, y2 - y1
        return cls(tuple(bh / h), tuple((x1 + x2) / 2 / w), tuple((y1 + y2) / 2 / h), tuple(w / h),
                   tuple(bw / np.maximum(bh, 1e-6)))

    @classmethod
    def default(cls) -> BoxStats:
        """A fallback measured once on the 272 one-digit photos of ../shared/data (quantiles)."""
        return cls((0.56, 0.627, 0.71, 0.778, 0.846), (0.431, 0.485, 0.5, 0.515, 0.534),
                   (0.438, 0.464, 0.486, 0.512, 0.534), (1.783, 1.866, 1.965, 2.165, 2.375),
                   (0.391, 0.474, 0.545, 0.628, 0.704))

    def summary(self) -> dict:
        """Quantiles of each distribution, for the manifest."""
        out = {"count": len(self.rel_h), "quantiles": list(QUANTILES)}
        for name, values in asdict(self).items():
            out[name] = [round(float(q), 4) for q in np.quantile(values, QUANTILES)]
        return out

    def draw(self, rng: np.random.Generator, name: str, spread: float = 1.0) -> float:
        """One value of distribution ``name``: a real sample, jittered by ``spread`` x its IQR."""
        values = np.asarray(getattr(self, name))
        q25, q75 = np.quantile(values, (0.25, 0.75))
        return float(values[rng.integers(len(values))] + rng.normal(0, 0.5 * spread * (q75 - q25)))

    def draw_rel_h(self, rng: np.random.Generator, wide_share: float = 0.3) -> float:
        """Digit height share: mostly as measured, ``wide_share`` of the time uniform in 0.25..0.9.

        Real test photos hold smaller digits than the train sample (median 0.55, p10 0.26), so
        the draw is widened on purpose.
        """
        if rng.random() < wide_share:
            return float(rng.uniform(0.25, 0.9))
        return float(np.clip(self.draw(rng, "rel_h"), 0.25, 0.95))


@dataclass(frozen=True)
class Framing:
    """Where and how large the digit is in a window or synthetic photo.

    ``sample`` follows the sample's one-digit photos (``BoxStats``, tightly framed);
    ``wide`` spans what real photos show: digit height share anywhere in ``rel_h``,
    centre anywhere in the middle ``2 * centre`` of the photo, photo aspect in ``aspect``.
    """

    name: str = "sample"
    rel_h: tuple[float, float] = (0.15, 0.95)
    centre: float = 0.3
    aspect: tuple[float, float] = (1.0, 3.5)

    NAMES: ClassVar[tuple[str, ...]] = ("sample", "wide")

    @classmethod
    def named(cls, name: str) -> Framing:
        if name not in cls.NAMES:
            raise ValueError(f"unknown framing {name!r}: choose one of {', '.join(cls.NAMES)}")
        return cls(name=name)

    def draw(self, stats: BoxStats, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """(digit height share, centre x, centre y, photo width / height); the digit stays inside."""
        if self.name == "sample":
            rel_h = stats.draw_rel_h(rng)
            aspect = float(np.clip(stats.draw(rng, "aspect"), 0.7, 3.2))
            cx = float(np.clip(stats.draw(rng, "cx"), 0.3, 0.7))
            return rel_h, cx, float(np.clip(stats.draw(rng, "cy"), 0.3, 0.7)), aspect
        rel_h = float(rng.uniform(*self.rel_h))
        lo_y = max(0.5 - self.centre, rel_h / 2)
        cy = float(rng.uniform(lo_y, max(lo_y, 1.0 - lo_y)))
        cx = float(rng.uniform(0.5 - self.centre, 0.5 + self.centre))
        return rel_h, cx, cy, float(np.exp(rng.uniform(*np.log(self.aspect))))
