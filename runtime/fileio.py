"""Atomic file writing and the overwrite rule shared by every command.

Outputs appear whole or not at all (written to a temporary file beside the
target, then renamed), and nothing that exists is replaced without ``force``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output path exists and the caller did not ask to overwrite it."""


class OutputDirError(OSError):
    """An output folder that cannot be made or written to."""


def prepare_output_dir(path: str | os.PathLike[str]) -> Path:
    """Make the output folder and prove a file can be written in it, before any work is done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".digitloc-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    return path


def check_writable(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Refuse an existing output unless ``force``; make sure its folder exists."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OSError(f"{path.parent}: not a folder (a file is in the way)") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    ``suffix`` sets the temporary file's extension (writers such as cv2.imwrite or
    np.savez choose the format by it); by default the target's own is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                               suffix=suffix if suffix is not None else path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
