"""Click options and the error exit shared by every digitloc command."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

force_option = click.option("--force", is_flag=True, help="Overwrite outputs that already exist.")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line naming the problem to stderr and exit non-zero."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
