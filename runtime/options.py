"""Click options and the error exit shared by every digitloc command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click


class SizeType(click.ParamType):
    """An input size: one number for a square (``64``) or WIDTHxHEIGHT (``128x64``), as images
    are named; the value is the side (int) or (height, width)."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | tuple[int, int]:
        if isinstance(value, (int, tuple)):
            return value
        text = str(value).lower().strip()
        try:
            if "x" in text:
                w, h = (int(v) for v in text.split("x"))
                return (h, w) if h != w else h
            return int(text)
        except ValueError:
            self.fail(f"{value!r} is not a size: give 64 or WIDTHxHEIGHT such as 128x64", param, ctx)


SIZE = SizeType()
force_option = click.option("--force", is_flag=True, help="Overwrite outputs that already exist.")


def refine_option(default: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--refine/--no-refine: the detector's two-pass mode (see ``Detector``)."""
    return click.option("--refine/--no-refine", default=default, show_default=True,
                        help="Predict again on a window cut around the first box, so small or off-centre digits "
                             "are read at the size the model knows (twice the model's work).")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line naming the problem to stderr and exit non-zero."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
