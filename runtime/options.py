"""Click options and the error exit shared by every digitloc command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from digitloc.runtime.number import BOX_WIDTH_RANGE, DETECTOR_BOX_WIDTH


class SizeType(click.ParamType):
    """An input size: one number for a square (``64``) or WIDTHxHEIGHT (``128x64``), as images
    are named; the value is always (height, width), the one form every size takes from here on."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        text = str(value).lower().strip()
        try:
            w, h = (int(v) for v in text.split("x")) if "x" in text else (int(text),) * 2
        except ValueError:
            self.fail(f"{value!r} is not a size: give 64 or WIDTHxHEIGHT such as 128x64", param, ctx)
        if min(h, w) < 1:
            self.fail(f"{value!r} is not a size: both sides must be positive", param, ctx)
        return h, w


SIZE = SizeType()
force_option = click.option("--force", is_flag=True, help="Overwrite outputs that already exist.")
SIZE_HELP = "Input size of the model: 64 (square) or WIDTHxHEIGHT such as 128x64; the data's size."
size_option = click.option("--size", type=SIZE, default="64", show_default=True, help=SIZE_HELP)
detector_size_option = click.option("--size", type=SIZE, default="192x96", show_default=True, help=SIZE_HELP)  # detectors
threads_option = click.option("--threads", type=click.IntRange(1, 256), default=None,
                              help="Threads to compute on (default: the runtime's own choice, one per core).")
spin_option = click.option("--spin/--no-spin", default=False, show_default=True,
                           help="Let ONNX Runtime's threads spin-wait between calls: faster small batches on a CPU "
                                "the detector has to itself, much slower beside other work.")


def model_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--model: an ONNX file, the shipped default when not given (the command says which file is missing)."""
    return click.option("--model", type=click.Path(dir_okay=False), default=None,
                        help="ONNX model (default: the shipped one).")


def provider_option(default: str = "auto") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--provider: where the model runs, the choices the Detector knows."""
    from digitloc.runtime.detector import PROVIDER_CHOICES

    return click.option("--provider", type=click.Choice(PROVIDER_CHOICES), default=default, show_default=True,
                        help="Where the model runs: cpu (onnxruntime), cuda (fails when CUDA is not really used), auto "
                             "(CUDA when usable; else, with OpenVINO installed, each batch size on whichever of "
                             "onnxruntime and OpenVINO a timed probe on the first batch found faster on this CPU, "
                             "cached per CPU and model; else onnxruntime), openvino (OpenVINO's runtime, extra "
                             "`openvino`) or fastest (the same as auto).")


def output_option(help: str, default: Path | None = None, required: bool = False,
                  folder: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """-o/--output: the folder (or, with ``folder=False``, the file) a command writes; the one declaration of
    every command's -o, whose help names what that command writes there."""
    return click.option("-o", "--output", type=click.Path(file_okay=not folder, dir_okay=folder, path_type=Path),
                        default=default, required=required, show_default=default is not None, help=help)


def refine_option(default: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--refine/--no-refine: the detector's two-pass mode (see ``Detector``)."""
    return click.option("--refine/--no-refine", default=default, show_default=True,
                        help="Predict again on a window cut around what the first pass read (one-digit models: "
                             "its box; detectors: the digits read, where they are under 0.6 of the photo's height), "
                             "so small or off-centre digits are read at the size the model knows (up to twice the "
                             "model's work).")


min_score_option = click.option(
    "--min-score", type=click.FloatRange(0.0, 1.0), default=None,
    help="Detectors: the score a digit needs to be read (default: the model's own, chosen by its training run "
         "on validation photos).")
max_digits_option = click.option("--max-digits", type=click.IntRange(min=1), default=8, show_default=True,
                                 help="Detectors: the most digits read per photo (the most confident).")
box_width_option = click.option(
    "--box-width", type=click.FloatRange(*BOX_WIDTH_RANGE), default=DETECTOR_BOX_WIDTH, show_default=True,
    help="Detectors: the digits' boxes are widened about their centres by this factor once read, toward SVHN's "
         "box convention (1: the model's own boxes).")
one_line_option = click.option("--one-line/--all-lines", default=True, show_default=True,
                               help="Detectors: the number is the digits on the most confident digit's line and of "
                                    "about its size (a lamp or plaque beside it is left out); --all-lines reads "
                                    "every row, for numbers written on two lines.")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line naming the problem to stderr and exit non-zero."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# The top-level modules each optional extra of pyproject.toml brings (the base install has numpy,
# onnxruntime, OpenCV, click, tqdm).
EXTRA_MODULES = {
    "train": ("tensorflow", "keras", "h5py", "matplotlib", "PIL"),
    "export": ("tf2onnx", "onnx", "onnxconverter_common"),
    "serve": ("starlette", "uvicorn", "multipart", "python_multipart"),
    "peers": ("openvino", "ai_edge_litert"),
}


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name), or None when no extra does."""
    top = (module or "").split(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)


def needs_extras(prog: str, *extras: str) -> Callable[[click.Command], click.Command]:
    """Decorate a command that needs ``extras``: a module of a missing extra ends it with one line
    naming what to install (``error: digitloc-train needs the train extra: pip install 'digitloc[train]'``),
    not a traceback."""

    def decorate(command: click.Command) -> click.Command:
        invoke = command.invoke

        def guarded(ctx: click.Context) -> Any:
            try:
                return invoke(ctx)
            except ModuleNotFoundError as exc:
                missing = extra_for(exc.name)
                if missing is None:
                    raise
                named = extras if missing in extras else (missing,)
                fail(f"{prog} needs the {' and '.join(named)} extra{'s' * (len(named) > 1)}: "
                     f"pip install 'digitloc[{','.join(named)}]'")

        command.invoke = guarded  # type: ignore[method-assign]
        return command

    return decorate
