"""Geometry statistics of real one-digit photos, which crops and synthetic photos imitate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
