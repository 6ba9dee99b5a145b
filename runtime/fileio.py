"""Atomic file writing and the one output rule shared by every command.

Outputs appear whole or not at all (written to a temporary file beside the
target, then renamed). ``OutputRule`` decides, before anything is written, whether
a path may be written at all: never an input of the same run, never another output
of the same run, never a symbolic link or other non-regular file, never the model
being read, and over an existing regular file only with ``force``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
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
    except FileExistsError:
        raise OutputDirError(f"{path}: not a folder (a file is in the way)") from None
    except OSError as exc:
        raise OutputDirError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".digitloc-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    return path


class OutputRefusedError(OSError):
    """An output path the rule refuses: an input, another output, the model, a link or a non-regular file."""


KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
         (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO", "a symbolic link", ...), from an lstat mode; None for a regular file."""
    return next((name for test, name in KINDS if test(mode)), None if stat.S_ISREG(mode) else "not a plain file")


class OutputRule:
    """The one rule for every file a run writes (annotated images and videos, JSON lines, exports, reports).

    ``claim`` refuses, with one message naming the path: a symbolic link or any non-regular file
    (never written through or replaced), an input of this run, the model this run reads, a path
    already claimed by another output of this run, and an existing file without ``force``.
    Paths are compared as resolved paths and, where they exist, as files (device and inode), so
    another spelling or a hard link of an input is still that input.
    """

    def __init__(self, inputs: Iterable[str | os.PathLike[str]] = (),
                 models: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.inputs = [_identity(p) for p in inputs]
        self.models = [_identity(p) for p in models]
        self.claimed: list[tuple[str, tuple[int, int] | None]] = []

    def claim(self, path: str | os.PathLike[str], force: bool = False) -> Path:
        """Check ``path`` against the rule and record it as an output of this run."""
        path = Path(path)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            mode = None  # nothing there: whether its folder can be written is checked where it is made
        except OSError as exc:
            raise OutputRefusedError(f"{path}: cannot be checked ({exc.strerror or exc})") from None
        kind = file_kind(mode) if mode is not None else None
        if kind is not None:
            raise OutputRefusedError(f"{path}: is {kind}, not a regular file; not written")
        me = _identity(path)
        if any(_same(me, other) for other in self.inputs):
            raise OutputRefusedError(f"{path}: is an input of this run; not written")
        if any(_same(me, other) for other in self.models):
            raise OutputRefusedError(f"{path}: is the model this run reads; not written")
        if any(_same(me, other) for other in self.claimed):
            raise OutputRefusedError(f"{path}: is also another output of this run; not written")
        if mode is not None and not force:
            raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")
        self.claimed.append(me)
        return path


def _identity(path: str | os.PathLike[str]) -> tuple[str, tuple[int, int] | None]:
    """A path as its resolved form and, when it exists, its (device, inode)."""
    try:
        st = os.stat(path)
        inode = (st.st_dev, st.st_ino)
    except OSError:
        inode = None
    return os.path.realpath(path), inode


def _same(a: tuple[str, tuple[int, int] | None], b: tuple[str, tuple[int, int] | None]) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


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
    tmp: str | None = None
    try:
        # SIGTERM is held while the file is made, so a stop (digitloc-run raises on it) cannot come between
        # its creation and ``tmp`` naming it; a held one is raised at the end of the block, and removes it.
        with sigterm_held():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                                       suffix=suffix if suffix is not None else path.suffix)
            os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """Run a block with SIGTERM's Python handler held: a SIGTERM that arrives meanwhile is handed to
    the handler when the block ends, so a block that makes a file is not cut before its caller knows it.

    Held by swapping the Python handler, not by a thread's signal mask: the kernel hands a process's
    SIGTERM to any thread that does not block it (onnxruntime's, FFmpeg's), and Python then runs the
    handler in the main thread anyway. Handlers can only be swapped in the main thread, and one not set
    from Python cannot be put back: in those cases the block just runs.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is None:
        yield
        return
    pending: list[int] = []
    handler = signal.signal(signal.SIGTERM, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handler)
        if pending and callable(handler):
            handler(pending[0], None)
        elif pending and handler == signal.SIG_DFL:
            signal.raise_signal(signal.SIGTERM)


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
