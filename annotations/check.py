"""Check an SVHN-style folder: images present and readable, boxes inside and non-empty.

SVHN's own boxes overshoot the image by a pixel or two now and then: those are
clipped and counted, not rejected. Nothing here raises for a bad entry; the
report counts each kind of problem and names the worst offenders.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from digitloc.annotations.digitstruct import AnnotationError, DigitBox, Problem, Record, read_annotations

ANNOTATION_NAMES = ("digitStruct.json", "digitStruct.mat")


def find_annotations(folder: str | os.PathLike[str]) -> Path:
    """The digitStruct file of an SVHN folder (JSON preferred over .mat)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: not a folder")
    for name in ANNOTATION_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise AnnotationError(f"{folder}: no {' or '.join(ANNOTATION_NAMES)} inside")


def photo_path(folder: Path, filename: str) -> Path:
    """The photo ``filename`` names inside ``folder``; ValueError for a name that leaves the folder."""
    name = Path(filename)
    if not filename or name.is_absolute() or ".." in name.parts:
        raise ValueError(f"file name {filename!r} points outside the folder")
    return folder / name


def read_image(path: Path) -> np.ndarray:
    """Read a photo as OpenCV BGR uint8, or raise ValueError naming the problem."""
    if not path.is_file():
        raise ValueError("missing image")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ValueError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ValueError("unreadable or corrupt image")
    return image


@dataclass(frozen=True)
class ClippedBox:
    """A box clipped to its image, with how far the original reached outside (pixels)."""

    digit: int
    x1: float
    y1: float
    x2: float
    y2: float
    overshoot: float


def clip_to_image(box: DigitBox, width: int, height: int) -> ClippedBox | None:
    """Clip a box to the image; None if nothing of it remains (empty or wholly outside)."""
    x1, y1, x2, y2 = box.xyxy
    cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
    cx2, cy2 = min(x2, float(width)), min(y2, float(height))
    if cx2 - cx1 < 1.0 or cy2 - cy1 < 1.0:
        return None
    overshoot = max(0.0 - x1, 0.0 - y1, x2 - width, y2 - height, 0.0)
    return ClippedBox(box.digit, cx1, cy1, cx2, cy2, overshoot)


@dataclass
class CheckReport:
    """What a check found: counts per kind of problem and the worst offenders."""

    annotations: str
    images: int = 0
    digits: int = 0
    digits_per_image: Counter = field(default_factory=Counter)
    digit_counts: Counter = field(default_factory=Counter)
    clipped_boxes: int = 0
    worst_overshoots: list[tuple[float, str]] = field(default_factory=list)
    empty_boxes: list[Problem] = field(default_factory=list)
    bad_images: list[Problem] = field(default_factory=list)
    bad_entries: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.empty_boxes or self.bad_images or self.bad_entries)

    def to_dict(self, worst: int = 10) -> dict:
        return {
            "annotations": self.annotations,
            "images": self.images,
            "digits": self.digits,
            "digits_per_image": {str(k): v for k, v in sorted(self.digits_per_image.items())},
            "digit_counts": {str(k): v for k, v in sorted(self.digit_counts.items())},
            "clipped_boxes": self.clipped_boxes,
            "worst_overshoots_px": [{"file": f, "px": px} for px, f in self.worst_overshoots[:worst]],
            "empty_or_outside_boxes": len(self.empty_boxes),
            "bad_images": len(self.bad_images),
            "bad_entries": len(self.bad_entries),
            "problems": [str(p) for p in (self.bad_images + self.empty_boxes + self.bad_entries)[:worst]],
        }


def check_records(folder: Path, records: list[Record], report: CheckReport) -> CheckReport:
    """Open every image of ``records`` and check its boxes against its size."""
    overshoots = []
    for record in records:
        report.images += 1
        try:
            height, width = read_image(photo_path(folder, record.filename)).shape[:2]
        except ValueError as exc:
            report.bad_images.append(Problem(record.filename, str(exc)))
            continue
        report.digits_per_image[len(record.boxes)] += 1
        for j, box in enumerate(record.boxes):
            report.digits += 1
            report.digit_counts[box.digit] += 1
            clipped = clip_to_image(box, width, height)
            if clipped is None:
                report.empty_boxes.append(Problem(
                    record.filename, f"box {j} is empty or outside the {width}x{height} image: {box.xyxy}"))
            elif clipped.overshoot > 0:
                report.clipped_boxes += 1
                overshoots.append((clipped.overshoot, record.filename))
    report.worst_overshoots = sorted(overshoots, reverse=True)
    return report


def check_folder(folder: str | os.PathLike[str], annotations: str | os.PathLike[str] | None = None,
                 ) -> CheckReport:
    """Check an SVHN folder; raises AnnotationError only when its annotations are unusable."""
    folder = Path(folder)
    path = Path(annotations) if annotations else find_annotations(folder)
    problems: list[Problem] = []
    records = read_annotations(path, problems)
    report = CheckReport(annotations=str(path), bad_entries=problems)
    return check_records(folder, records, report)
