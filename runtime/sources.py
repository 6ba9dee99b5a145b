"""Inputs of digitloc-run: image files, folders (recursive), globs, video files and cameras.

Every input becomes a stream of frames; what cannot be read becomes an error item that
names the file and the reason, so the rest of the batch goes on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from digitloc.runtime.imageio import DEFAULT_MAX_PIXELS, ImageError, check_size, read_image_file, unusable

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg"}


@dataclass(frozen=True)
class Source:
    """One input: an image, a video or a camera; ``name`` is its path relative to what was given."""

    kind: str  # "image", "video", "camera", or "error"
    location: str  # file path, or camera:N as typed
    name: str  # for output file names
    error: str | None = None


@dataclass
class Frame:
    """A frame to predict on (an image is a video of one frame, numbered None)."""

    source: Source
    index: int | None
    image: np.ndarray | None
    error: str | None = None


def _kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "image" if ext in IMAGE_EXTS else "video" if ext in VIDEO_EXTS else None


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def expand_sources(specs: list[str], exclude: Path | None = None) -> list[Source]:
    """Turn command-line inputs into sources; unknown or missing ones become error sources.

    Files under ``exclude`` (the output folder) are left out of folders and globs, so earlier
    outputs are never read back as inputs. Each source's ``name`` is its path relative to the
    folder all inputs share, so ``a/1.png`` and ``b/1.png`` keep apart.
    """
    skip = exclude.resolve() if exclude is not None else None
    found: list[tuple[str, Path, Path] | Source] = []  # (kind, file, the folder it was given under)
    for spec in specs:
        if spec.startswith("camera:"):
            index = spec.split(":", 1)[1]
            if not index.isdigit():
                found.append(Source("error", spec, spec, f"{spec}: camera index must be a number"))
            else:
                found.append(Source("camera", spec, f"camera{index}"))
            continue
        path = Path(spec)
        problem = unusable(path)
        if problem:
            found.append(Source("error", spec, spec, f"{spec}: {problem}"))
        elif path.is_dir():
            entries = sorted(p for p in path.rglob("*") if _kind_of(p) and not p.is_dir() and not _inside(p, skip))
            bad = {p: unusable(p) for p in entries}
            files = [p for p in entries if bad[p] is None and p.is_file()]
            if not files and not any(bad.values()):
                found.append(Source("error", spec, spec, f"{spec}: folder holds no image or video files"))
            for p in entries:
                if bad[p]:
                    found.append(Source("error", str(p), str(p), f"{p}: {bad[p]}"))
                elif p in files:
                    found.append((_kind_of(p), p, path))  # type: ignore[arg-type]
        elif path.is_file():
            found.append((_kind_of(path) or "image", path, path.parent))  # unknown extension: try it as an image
        elif any(c in spec for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True)
                             if Path(p).is_file() and not _inside(Path(p), skip))
            if not matches:
                found.append(Source("error", spec, spec, f"{spec}: pattern matches no file"))
            found.extend((_kind_of(p) or "image", p, p.parent) for p in matches)
        else:
            found.append(Source("error", spec, spec, f"{spec}: no such file or folder"))
    roots = [os.path.abspath(item[2]) for item in found if isinstance(item, tuple)]
    base = Path(os.path.commonpath(roots)) if roots else Path.cwd()
    return [item if isinstance(item, Source) else
            Source(item[0], str(item[1]), os.path.relpath(os.path.abspath(item[1]), base)) for item in found]


def iter_frames(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS, max_frames: int | None = None,
                ) -> Iterator[Frame]:
    """Frames of one source; failures come as a Frame with ``error`` set."""
    if source.kind == "error":
        yield Frame(source, None, None, source.error)
        return
    if source.kind == "image":
        try:
            yield Frame(source, None, read_image_file(source.location, max_pixels))
        except ImageError as exc:
            yield Frame(source, None, None, str(exc))
        return
    capture = _open_capture(int(source.location.split(":", 1)[1]) if source.kind == "camera" else source.location)
    try:
        if not capture.isOpened():
            yield Frame(source, None, None, f"{source.location}: cannot open {source.kind}")
            return
        index = 0
        while max_frames is None or index < max_frames:
            with quiet_native_stderr():
                ok, frame = capture.read()
            if not ok or frame is None:
                break
            if index == 0:
                try:
                    check_size(frame.shape[1], frame.shape[0], f"{source.location} frame 0", max_pixels)
                except ImageError as exc:  # every frame of a video has the first one's size
                    yield Frame(source, 0, None, str(exc))
                    return
            yield Frame(source, index, frame)
            index += 1
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if source.kind == "video" else 0
        if index == 0:
            yield Frame(source, None, None, f"{source.location}: {source.kind} has no frames")
        elif index < declared and (max_frames is None or index < max_frames):
            yield Frame(source, None, None, f"{source.location}: video ends after {index} of {declared} frames "
                                            "(truncated or corrupt)")
    finally:
        with quiet_native_stderr():
            capture.release()


_SAVED_STDERR: list[int] = []  # descriptor 2 as it was, while native output is silenced


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what native code (FFmpeg, OpenCV) prints straight to file descriptor 2 during a block:
    a broken video is then one ``error:`` line of ours, not FFmpeg's ``[mjpeg @ 0x...]`` noise."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    _SAVED_STDERR.append(saved)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        _SAVED_STDERR.pop()
        os.dup2(saved, 2)
        os.close(saved)


def restore_native_stderr() -> None:
    """Put descriptor 2 back at once (a signal handler's message, inside a silenced block, must be seen)."""
    if _SAVED_STDERR:
        os.dup2(_SAVED_STDERR[-1], 2)


def _open_capture(target: int | str) -> cv2.VideoCapture:
    """cv2.VideoCapture without OpenCV's own warnings when it fails: the caller says why in one line."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        with quiet_native_stderr():
            return cv2.VideoCapture(target)
    finally:
        logging.setLogLevel(level)


def video_properties(path: str) -> tuple[float, int, int, int]:
    """fps, width, height, frame count of a video file (fps 25 when the file does not say)."""
    capture = _open_capture(path)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        return (fps if fps > 0 else 25.0, int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        with quiet_native_stderr():
            capture.release()
