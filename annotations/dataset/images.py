"""Real images for calibration, parity and agreement checks: a dataset folder's split (real pixels only)
or a folder of image files, preprocessed to the model's size."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from digitloc.annotations.dataset.data import KIND_SYNTH, DataSet, DatasetError
from digitloc.runtime.contract import size_text


def load_images(source: str | Path, size: tuple[int, int], split: str, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` real images: a dataset folder (its ``split``, real pixels only: SVHN photos
    and crops, no synthetic ones) or a folder of image files."""
    return load_labelled(source, size, split, limit, seed)[0]


def load_labelled(source: str | Path, size: tuple[int, int], split: str, limit: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`load_images` plus their digits (a dataset folder; None for a folder of image files)."""
    path = Path(source)
    rng = np.random.default_rng(seed)
    if (path / f"{split}.npz").is_file():
        data = DataSet.load(path / f"{split}.npz")
        data = data.select(data.kinds != KIND_SYNTH)
        if tuple(data.images.shape[1:3]) != tuple(size):
            raise DatasetError(f"{path}: images are {size_text(data.images.shape[1:3])} px, "
                               f"the model takes {size_text(size)} px")
        pick = np.sort(rng.permutation(len(data))[:limit])
        images, labels = data.images[pick], data.labels[pick]
    elif path.is_dir():
        images, labels = _image_files(path, size, rng, limit), None
    else:
        raise DatasetError(f"{source}: neither a dataset folder with {split}.npz nor an image folder")
    if len(images) == 0:
        raise DatasetError(f"{source}: no readable real images")
    return images, labels


def _image_files(folder: Path, size: tuple[int, int], rng: np.random.Generator, limit: int) -> np.ndarray:
    """Up to ``limit`` image files of ``folder`` (recursive), preprocessed; unreadable ones skipped with a warning."""
    from digitloc.runtime.imageio import ImageError, read_image_file
    from digitloc.runtime.preprocess import preprocess
    from digitloc.runtime.sources import IMAGE_EXTS

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    files = [files[i] for i in np.sort(rng.permutation(len(files))[:limit])]
    images = []
    for f in files:
        try:
            images.append(preprocess(read_image_file(f), size))
        except ImageError as exc:
            click.echo(f"warning: skipped {exc}", err=True)
    return np.stack(images) if images else np.zeros((0, *size, 3), np.uint8)
