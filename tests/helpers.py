"""Test helpers: write SVHN's digitStruct.mat in its exact v7.3 layout, make tiny folders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np


def write_digitstruct_mat(path: Path, entries: list[dict]) -> None:
    """Write entries ({"filename", "boxes": [{label, left, top, width, height}]}) the way
    SVHN's digitStruct.mat stores them: HDF5 with a ``digitStruct`` group whose ``name``
    and ``bbox`` datasets are Nx1 object references; each bbox field is a 1x1 double for a
    one-digit photo and a kx1 column of references to 1x1 doubles otherwise.
    """
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        group = f.create_group("digitStruct")
        name_refs, bbox_refs = [], []
        counter = 0

        def new(name_data: np.ndarray) -> h5py.Reference:
            nonlocal counter
            counter += 1
            return refs.create_dataset(f"r{counter}", data=name_data).ref

        for entry in entries:
            name_refs.append(new(np.array([[ord(c)] for c in entry["filename"]], dtype=np.uint16)))
            bbox_group = refs.create_group(f"b{counter}")
            counter += 1
            for key in ("height", "label", "left", "top", "width"):
                values = [float(b[key]) for b in entry["boxes"]]
                if len(values) == 1:
                    bbox_group.create_dataset(key, data=np.array([[values[0]]]))
                else:
                    col = np.array([[new(np.array([[v]]))] for v in values], dtype=h5py.ref_dtype)
                    bbox_group.create_dataset(key, data=col, dtype=h5py.ref_dtype)
            bbox_refs.append(bbox_group.ref)
        group.create_dataset("name", data=np.array(name_refs, dtype=h5py.ref_dtype).reshape(-1, 1))
        group.create_dataset("bbox", data=np.array(bbox_refs, dtype=h5py.ref_dtype).reshape(-1, 1))


def make_svhn_folder(folder: Path, entries: list[dict], size: tuple[int, int] = (40, 80)) -> Path:
    """A folder of plain images (dark digit-ish rectangles in each box) plus digitStruct.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        img = np.full((*size, 3), 200, np.uint8)
        for b in entry["boxes"]:
            x1, y1 = int(max(b["left"], 0)), int(max(b["top"], 0))
            cv2.rectangle(img, (x1, y1), (int(b["left"] + b["width"]) - 1, int(b["top"] + b["height"]) - 1),
                          (30, 30, 30), -1)
        cv2.imwrite(str(folder / entry["filename"]), img)
    (folder / "digitStruct.json").write_text(json.dumps(entries))
    return folder


def toy_data(n: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bright bars on dark: the class is the bar's column band, the box is the bar (RGB uint8)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (n, size, size, 3)).astype(np.uint8)
    labels = rng.integers(0, 10, n)
    boxes = np.zeros((n, 4), np.float32)
    scale = size / 32
    for i, label in enumerate(labels):
        x1, y1 = int((1 + 3 * label) * scale), int(rng.integers(0, 10) * scale)
        w, h = int(3 * scale), int(20 * scale)
        images[i, y1:y1 + h, x1:x1 + w] = 255
        boxes[i] = [x1 / size, y1 / size, (x1 + w) / size, (y1 + h) / size]
    return images, boxes, labels
