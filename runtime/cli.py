"""digitloc-run: predict the digit and its box on images, folders, globs, videos and cameras."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import cv2

from digitloc.runtime.contract import ContractError, size_text
from digitloc.runtime.detector import DEFAULT_REFINE, Detection, Detector, ProviderError, available_providers
from digitloc.runtime.draw import annotate
from digitloc.runtime.fileio import (
    OutputDirError,
    OutputRule,
    atomic_path,
    check_writable,
    prepare_output_dir,
    sigterm_held,
)
from digitloc.runtime.imageio import DEFAULT_MAX_PIXELS
from digitloc.runtime.modelcheck import check_model, first_line
from digitloc.runtime.options import (
    box_width_option,
    fail,
    force_option,
    max_digits_option,
    min_score_option,
    model_option,
    one_line_option,
    output_option,
    provider_option,
    refine_option,
    spin_option,
    threads_option,
)
from digitloc.runtime.progress import progress
from digitloc.runtime.sources import (
    Frame,
    Source,
    expand_sources,
    iter_frames,
    restore_native_stderr,
    video_properties,
)


class VideoOut:
    """An annotated copy of one video (mp4v), written to a temporary file and renamed when done."""

    def __init__(self, target: Path, fps: float) -> None:
        self.target, self.fps = target, fps
        self._ctx = atomic_path(target, suffix=".mp4")
        self._tmp: Path | None = None
        self.writer: cv2.VideoWriter | None = None

    def write(self, frame_bgr) -> None:
        if self._tmp is None:
            # The temporary file is made with SIGTERM held back (see sigterm_held), so a stop can never come
            # between its creation and this object knowing it (close() then removes it).
            with sigterm_held():
                self._tmp = self._ctx.__enter__()
                h, w = frame_bgr.shape[:2]
                self.writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        self.writer.write(frame_bgr)

    def close(self, ok: bool) -> None:
        if self._tmp is None:
            return  # nothing written, nothing to remove
        if self.writer is not None:
            self.writer.release()
        if ok and self.writer is not None:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("no frames"), None)


def _frames(sources: list[Source], max_pixels: int, max_frames: int | None) -> Iterator[Frame]:
    for source in sources:
        yield from iter_frames(source, max_pixels, max_frames)


def _batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@click.command()
@click.argument("sources", nargs=-1)
@model_option()
@provider_option()
@threads_option
@spin_option
@click.option("--batch", default=8, show_default=True, help="Frames per inference call.")
@output_option(help="Write annotated copies of images and videos here, at their paths relative to the folder "
                   "the inputs share (files already here are never read as inputs).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image or frame on stdout.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON lines to this file instead (whole, when the run ends).")
@click.option("--summary", is_flag=True,
              help="At the end, a table: each photo's file, number, and its most confident digit, confidence and box.")
@click.option("--max-pixels", default=DEFAULT_MAX_PIXELS, show_default=True, help="Refuse larger images.")
@click.option("--max-frames", type=int, default=None, help="Stop each video or camera after this many frames.")
@force_option
@click.option("--list-providers", is_flag=True, help="Show the execution providers and exit.")
@refine_option(DEFAULT_REFINE)
@min_score_option
@max_digits_option
@one_line_option
@box_width_option
def main(sources: tuple[str, ...], model: str | None, provider: str, threads: int | None, spin: bool, batch: int,
         output: Path | None, as_json: bool, json_out: Path | None, summary: bool, max_pixels: int,
         max_frames: int | None, force: bool, list_providers: bool, refine: bool, min_score: float | None,
         max_digits: int, one_line: bool, box_width: float) -> None:
    """Find and read the house number in SOURCES: image files, folders, globs, videos, camera:N."""
    if list_providers:
        for name in available_providers():
            click.echo(name)
        return
    if not sources:
        raise click.UsageError("give at least one image, folder, glob, video or camera:N")
    if batch < 1:
        raise click.BadParameter("must be at least 1", param_hint="--batch")
    try:
        detector = Detector(model, provider=provider, threads=threads, max_pixels=max_pixels, refine=refine,
                            spin=spin, min_score=min_score, max_digits=max_digits, one_line=one_line,
                            box_width=box_width)
        check_model(detector)  # a model that contradicts its metadata: one line now, not one per photo
    except (ContractError, ProviderError, FileNotFoundError) as exc:
        fail(str(exc), 2)
    click.echo(f"model {detector.model_path.name} ({detector.info.precision}, "
               f"{size_text(detector.input_size)}) on {detector.provider}", err=True)

    if output is not None:
        folder = next((s for s in sources if output.is_dir() and Path(s).is_dir() and os.path.samefile(s, output)), None)
        if folder is not None:
            fail(f"{output}: --output is an input folder; give another folder", 2)
        try:
            prepare_output_dir(output)
        except OutputDirError as exc:
            fail(str(exc), 2)
    items = expand_sources(list(sources), exclude=output)
    rule = OutputRule(inputs=[s.location for s in items if s.kind in ("image", "video")],
                      models=[detector.model_path])
    plan, failures = plan_outputs(items, output, force, rule) if output is not None else ({}, [])
    if json_out is not None:
        try:
            rule.claim(json_out, force)
            check_writable(json_out, force=True)
        except OSError as exc:
            fail(printable(str(exc)), 2)
    for message in failures:
        click.echo(f"error: {printable(message)}", err=True)
    total = sum(1 if s.kind in ("image", "error") else max(video_properties(s.location)[3], 0) if s.kind == "video"
                else 0 for s in items)
    videos: dict[str, VideoOut | None] = {}
    done = 0
    started = time.perf_counter()
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    finished = False
    table: list[tuple[str, Detection]] = []  # the photos, for --summary
    with _json_sink(json_out) as emit:
        try:
            bar = progress(total=total or None, desc="predict", unit="frame")
            for chunk in _batches(_frames(items, max_pixels, max_frames), batch):
                good = [f for f in chunk if f.error is None]
                for f in chunk:
                    if f.error is not None:
                        failures.append(f.error)
                        click.echo(f"error: {printable(f.error)}", err=True)
                if good:
                    done_ok, errors, ms = _predict(detector, good)
                    for message in errors:
                        failures.append(message)
                        click.echo(f"error: {printable(message)}", err=True)
                    good = [f for f, _ in done_ok]
                    for frame, det in done_ok:
                        if as_json or json_out is not None:
                            emit(det.to_dict(ms, source=frame.source.location, frame=frame.index))
                        if summary and frame.index is None:
                            table.append((frame.source.name, det))
                        if output is not None:
                            err = _write_output(plan.get(frame.source.location), frame, det, videos)
                            if err:
                                failures.append(err)
                                click.echo(f"error: {err}", err=True)
                done += len(good)
                bar.update(len(chunk))
            bar.close()
            finished = True
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
            for video in videos.values():
                if video is not None:
                    video.close(ok=finished)  # an interrupted run leaves no half-written video behind
    seconds = time.perf_counter() - started
    if summary:
        click.echo(summary_table(table))
    if json_out is not None:
        click.echo(f"JSON lines in {json_out}", err=True)
    click.echo(f"{done} frames predicted, {len(failures)} failed, {seconds:.2f} s, "
               f"{done / seconds if seconds > 0 else 0:.1f} frames/s on {detector.provider}", err=True)
    if failures:
        sys.exit(1)


@contextlib.contextmanager
def _json_sink(path: Path | None) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """Where the JSON lines go: stdout, or ``path``, written whole (atomically) when the run ends."""
    if path is None:
        yield lambda record: click.echo(json.dumps(record))
        return
    with atomic_path(path) as tmp, tmp.open("w") as f:
        yield lambda record: f.write(json.dumps(record) + "\n")


def _predict(detector: Detector, frames: list[Frame]) -> tuple[list[tuple[Frame, Detection]], list[str], float]:
    """Predict a batch; when it fails, each frame alone, so one bad frame (or a model that fails on
    it) is one error line and the others are still predicted. Returns the (frame, detection) pairs,
    the error messages and the milliseconds per frame."""
    try:
        detections, ms = detector.timed_batch([f.image for f in frames])
        return list(zip(frames, detections, strict=True)), [], ms / len(frames)
    except Exception as exc:  # noqa: BLE001 - ImageError, ContractError, and onnxruntime's own types
        if len(frames) == 1:
            return [], [f"{_where(frames[0])}: prediction failed ({first_line(exc)})"], 0.0
    pairs, errors, total = [], [], 0.0
    for frame in frames:
        one, failed, ms = _predict(detector, [frame])
        pairs += one
        errors += failed
        total += ms
    return pairs, errors, total / max(len(pairs), 1)


def _where(frame: Frame) -> str:
    return frame.source.location if frame.index is None else f"{frame.source.location} frame {frame.index}"


def printable(text: str) -> str:
    """``text`` on one line: control characters (a newline in a file name) written as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def summary_table(rows: list[tuple[str, Detection]]) -> str:
    """One line per photo: file, number read, the most confident digit, its confidence and box
    (x1, y1, x2, y2 in pixels)."""
    rows = [(printable(name), det) for name, det in rows]
    width = max([len("file"), *(len(name) for name, _ in rows)])
    digits = max([len("number"), *(len(det.number) for _, det in rows)])
    lines = [f"{'file':<{width}}  {'number':>{digits}}  digit  confidence  box (x1, y1, x2, y2)"]
    for name, det in rows:
        box = ", ".join(f"{v:.0f}" for v in det.bbox)
        lines.append(f"{name:<{width}}  {det.number or '-':>{digits}}  {det.digit:>5}  {det.confidence:>10.3f}  {box}")
    return "\n".join(lines)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM: unwind like an interrupt, so temporary outputs are removed on the way out."""
    restore_native_stderr()
    click.echo("error: terminated; unfinished outputs removed", err=True)
    sys.exit(128 + signum)


def plan_outputs(items: list[Source], output: Path, force: bool,
                 rule: OutputRule | None = None) -> tuple[dict[str, Path], list[str]]:
    """Each source's annotated output, decided before the first write.

    Outputs keep the sources' relative paths; two sources that would write the same file, or an
    output the rule refuses (an input of the run, the model, a link or other non-regular file, one
    that exists without ``force``: see ``fileio.OutputRule``) is an error for that source, which is
    still predicted but not written.
    """
    rule = rule or OutputRule(inputs=[s.location for s in items if s.kind in ("image", "video")])
    plan: dict[str, Path] = {}
    owner: dict[Path, str] = {}
    errors: list[str] = []
    for source in items:
        if source.kind == "error" or source.location in plan:
            continue
        target = output / source.name
        if source.kind == "image":
            if target.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp"):
                target = target.with_suffix(".png")
        else:
            target = target.with_suffix(".mp4")
        key = Path(os.path.abspath(target))
        if key in owner:
            errors.append(f"{source.location}: its output {target} is also {owner[key]}'s; not written "
                          "(rename one, or run them separately)")
            continue
        try:
            rule.claim(target, force)
        except OSError as exc:
            errors.append(str(exc))
            continue
        owner[key] = source.location
        plan[source.location] = target
    return plan, errors


def _write_output(target: Path | None, frame: Frame, det, videos: dict[str, VideoOut | None]) -> str | None:
    """Write one annotated image or video frame to its planned target; returns an error message instead of raising."""
    if target is None:
        return None  # not in the plan: its error was reported before the first write
    annotated = annotate(frame.image, det)
    try:
        if frame.source.kind == "image":
            with atomic_path(target) as tmp:
                if not cv2.imwrite(str(tmp), annotated):
                    return f"{target}: could not write image"
            return None
        key = frame.source.location
        if key not in videos:
            fps = video_properties(key)[0] if frame.source.kind == "video" else 30.0
            videos[key] = VideoOut(target, fps)
    except OSError as exc:
        return f"{target}: cannot write ({exc.strerror or exc})"
    video = videos[key]
    if video is not None:
        video.write(annotated)
    return None


if __name__ == "__main__":
    main()
