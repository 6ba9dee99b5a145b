"""Read and write SVHN's digitStruct annotations.

SVHN ships ``digitStruct.mat`` (MATLAB v7.3, which is HDF5): a ``digitStruct``
group holding ``name`` and ``bbox`` datasets of object references. Each bbox is a
group with ``label``, ``left``, ``top``, ``width`` and ``height``; a one-digit
entry stores each as a 1x1 value, a several-digit entry as a column of references
to 1x1 values. The JSON form (used by the reference project and ../shared/data) is
a list of ``{"filename", "boxes": [{"label", "left", "top", "width", "height"}]}``.
In both, label 10 means the digit 0; records here hold digits 0-9.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitloc.runtime.fileio import atomic_write_text

FIELDS = ("label", "left", "top", "width", "height")


class AnnotationError(ValueError):
    """An annotation file that cannot be read, or an entry that breaks the format."""


@dataclass(frozen=True)
class DigitBox:
    """One annotated digit: its value 0-9 and its box in pixels of the original photo."""

    digit: int
    left: float
    top: float
    width: float
    height: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.left + self.width, self.top + self.height)

    def to_svhn(self) -> dict[str, float]:
        """The SVHN JSON form (label 10 for the digit 0)."""
        label = 10 if self.digit == 0 else self.digit
        return {"label": float(label), "left": float(self.left), "top": float(self.top),
                "width": float(self.width), "height": float(self.height)}


@dataclass(frozen=True)
class Problem:
    """Something wrong with one file or entry, reported instead of raised."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Record:
    """One photo's annotations."""

    filename: str
    boxes: tuple[DigitBox, ...] = field(default_factory=tuple)


def svhn_label_to_digit(label: float, where: str) -> int:
    """SVHN label (1..10, 10 = zero) to the digit 0-9; anything else is an error."""
    value = float(label)
    if not value.is_integer() or not 1 <= value <= 10:
        raise AnnotationError(f"{where}: label {label!r} is outside 1..10")
    return 0 if int(value) == 10 else int(value)


def _box_from_mapping(entry: dict[str, Any], where: str) -> DigitBox:
    try:
        values = {k: float(entry[k]) for k in FIELDS}
    except KeyError as exc:
        raise AnnotationError(f"{where}: box lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: box values are not numbers: {entry!r}") from None
    return DigitBox(svhn_label_to_digit(values["label"], where), values["left"], values["top"],
                    values["width"], values["height"])


def _collect_boxes(entries: list[dict[str, Any]], where: str, filename: str,
                   problems: list[Problem] | None) -> tuple[DigitBox, ...] | None:
    """Parse boxes; a bad one raises, or with ``problems`` given drops the whole photo (None) and is
    reported: a photo missing one of its digits would be read as another number."""
    boxes = []
    for j, entry in enumerate(entries):
        try:
            boxes.append(_box_from_mapping(entry, f"{where} ({filename}) box {j}"))
        except AnnotationError as exc:
            if problems is None:
                raise
            problems.append(Problem(filename, f"photo dropped, box {j} is bad: {exc}"))
            return None
    return tuple(boxes)


def read_json(path: str | os.PathLike[str], problems: list[Problem] | None = None) -> list[Record]:
    """Read the JSON form: a list of {"filename", "boxes": [...]}.

    With ``problems`` given, a photo with a bad box is dropped whole and reported there instead of raising.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a list of records, got {type(data).__name__}")
    records = []
    for i, item in enumerate(data):
        where = f"{path} entry {i}"
        if not isinstance(item, dict) or "filename" not in item or "boxes" not in item:
            raise AnnotationError(f"{where}: expected {{'filename', 'boxes'}}")
        filename = str(item["filename"])
        boxes = _collect_boxes(list(item["boxes"]), where, filename, problems)
        if boxes is not None:
            records.append(Record(filename, boxes))
    return records


def _mat_values(h5file: Any, dataset: Any) -> list[float]:
    """A bbox field: a 1x1 value, or a column of references to 1x1 values."""
    import h5py

    if dataset.dtype == h5py.ref_dtype or dataset.dtype.kind == "O":
        return [float(h5file[ref][()].ravel()[0]) for ref in dataset[()].ravel()]
    return [float(v) for v in dataset[()].ravel()]


def _mat_name(h5file: Any, ref: Any) -> str:
    codes = h5file[ref][()].ravel()
    return "".join(chr(int(c)) for c in codes)


def read_mat(path: str | os.PathLike[str], problems: list[Problem] | None = None) -> list[Record]:
    """Read SVHN's digitStruct.mat (MATLAB v7.3 / HDF5) with h5py; ``problems`` as in read_json."""
    try:
        import h5py
    except ImportError:
        raise AnnotationError("reading .mat files needs h5py: pip install 'digitloc[train]'") from None
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: no such file")
    try:
        h5file = h5py.File(path, "r")
    except OSError:
        raise AnnotationError(
            f"{path}: not a MATLAB v7.3 (HDF5) file; SVHN's digitStruct.mat is v7.3") from None
    with h5file:
        group = h5file.get("digitStruct")
        if group is None or "name" not in group or "bbox" not in group:
            raise AnnotationError(f"{path}: no digitStruct group with 'name' and 'bbox' datasets")
        names = group["name"][()].ravel()
        bboxes = group["bbox"][()].ravel()
        if len(names) != len(bboxes):
            raise AnnotationError(f"{path}: {len(names)} names but {len(bboxes)} bbox entries")
        records = []
        for i, (name_ref, bbox_ref) in enumerate(zip(names, bboxes, strict=True)):
            try:
                filename = _mat_name(h5file, name_ref)
                bbox = h5file[bbox_ref]
                columns = {k: _mat_values(h5file, bbox[k]) for k in FIELDS}
            except (KeyError, TypeError, ValueError) as exc:
                raise AnnotationError(f"{path} entry {i}: unexpected layout ({exc})") from None
            counts = {len(v) for v in columns.values()}
            if len(counts) != 1:
                raise AnnotationError(f"{path} entry {i} ({filename}): fields of unequal length")
            entries = [{k: columns[k][j] for k in FIELDS} for j in range(counts.pop())]
            boxes = _collect_boxes(entries, f"{path} entry {i}", filename, problems)
            if boxes is not None:
                records.append(Record(filename, boxes))
    return records


def read_annotations(path: str | os.PathLike[str],
                     problems: list[Problem] | None = None) -> list[Record]:
    """Read either form, chosen by the file's suffix (.mat or .json)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mat":
        return read_mat(path, problems)
    if suffix == ".json":
        return read_json(path, problems)
    raise AnnotationError(f"{path}: expected a .mat or .json digitStruct file")


def records_to_json(records: list[Record]) -> list[dict[str, Any]]:
    """Records in the SVHN JSON form."""
    return [{"filename": r.filename, "boxes": [b.to_svhn() for b in r.boxes]} for r in records]


def write_json(records: list[Record], path: str | os.PathLike[str]) -> None:
    """Write records in the SVHN JSON form, atomically."""
    atomic_write_text(path, json.dumps(records_to_json(records), indent=1))
