"""Reading photos for inference: any depth or channel count, with a pixel limit checked
from the file header before decoding, so a huge image is refused instead of exhausting memory.

Every image path (``digitloc-run``, ``digitloc-serve``, ``Detector``) goes through
``decode_image`` or ``check_image``: a format whose header cannot be read here is refused
rather than decoded blind, and images below ``MIN_SIDE`` pixels a side are refused. The one
decoder applies EXIF orientation, so a phone photo stored sideways reads upright, and the
same, everywhere.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 40_000_000
MIN_SIDE = 8
FORMATS = "PNG, JPEG, GIF, BMP, WebP, TIFF, PNM"
# Any depth and any colour (16-bit and gray kept; alpha dropped), EXIF orientation applied.
# cv2.IMREAD_UNCHANGED would ignore the orientation: a sideways phone photo would read sideways.
DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


class ImageError(ValueError):
    """An input image that cannot be used: missing, empty, corrupt, too large or too small."""


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a classic TIFF's first image directory (BigTIFF is not read)."""
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    if offset + 2 > len(data):
        return None
    count = struct.unpack(order + "H", data[offset:offset + 2])[0]
    found: dict[int, int] = {}
    for k in range(count):
        at = offset + 2 + 12 * k
        if at + 12 > len(data):
            return None
        tag, kind = struct.unpack(order + "HH", data[at:at + 4])
        if tag in (256, 257):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), data[at + 8:at + (10 if kind == 3 else 12)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    tokens: list[int] = []
    for line in data[2:256].split(b"\n"):
        for token in line.split(b"#")[0].split():
            if not token.isdigit():
                return None
            tokens.append(int(token))
        if len(tokens) >= 2:
            return tokens[0], tokens[1]
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF, BMP, WebP, TIFF or PNM header; None when the
    format is another one or its header cannot be read."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:4] in (b"II*\0", b"MM\0*"):
            return _tiff_size(data)
        if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2 and data[2:3].isspace():
            return _pnm_size(data)
    except struct.error:
        return None
    return None


def check_size(width: int, height: int, name: str, max_pixels: int) -> None:
    """Refuse an image above the pixel limit or below the minimum side."""
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} image exceeds the {max_pixels:,}-pixel limit")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name}: {width}x{height} image is below the {MIN_SIDE}-pixel minimum side")


def check_image(image: np.ndarray, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Check an image array given to the detector: shape, size and, for float arrays, the 0..1 range.

    Float images must hold values in 0..1 (a float array in 0..255 would otherwise be read
    as mostly white): values outside it are an ImageError, not clipped.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ImageError(f"{name}: expected an H x W (x C) image array, got shape {image.shape}")
    check_size(image.shape[1], image.shape[0], name, max_pixels)
    if image.dtype.kind == "f":
        low, high = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0:
            raise ImageError(f"{name}: float image with values {low:g}..{high:g}; float images must be 0..1 "
                             "(divide by 255, or pass uint8)")
    return image


def decode_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 flags: int = DECODE_FLAGS) -> np.ndarray:
    """Decode image bytes, upright by their EXIF orientation, as OpenCV gives them (BGR or gray; 8 or
    16 bit); ``flags`` cv2.IMREAD_COLOR decodes straight to 8-bit BGR (what the model sees, in the
    least memory). The one decoder of files (digitloc-run, Detector) and uploads (digitloc-serve)."""
    if flags == cv2.IMREAD_UNCHANGED:
        flags = DECODE_FLAGS  # never without the orientation
    if not data:
        raise ImageError(f"{name}: empty file")
    size = header_size(data)
    if size is None:
        raise ImageError(f"{name}: not an image, or a corrupt one (accepted: {FORMATS})")
    check_size(*size, name, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not an image, or a corrupt one")
    check_size(image.shape[1], image.shape[0], name, max_pixels)
    return image


def read_image_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file for inference; ImageError names the file and the problem."""
    path = Path(path)
    problem = unusable(path)
    if problem:
        raise ImageError(f"{path}: {problem}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror})") from None
    return decode_image(data, str(path), max_pixels)


def unusable(path: str | os.PathLike[str]) -> str | None:
    """Why an existing directory entry cannot be read as a file (a symlink loop, a broken link, a FIFO,
    a device...), or None: a regular file, a folder, or nothing there (the caller says "no such file")."""
    from digitloc.runtime.fileio import file_kind

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if os.path.islink(path):
            return "broken symbolic link"
        return None
    kind = file_kind(mode)
    return None if kind in (None, "a folder") else f"is {kind}, not a regular file"
