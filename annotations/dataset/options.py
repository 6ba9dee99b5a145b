"""The data-set options several commands share (digitloc-data, -train, -bench), each declared once here:
one type, one help, one default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from digitloc.annotations.dataset.data import KIND_ALL, KINDS

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

data_option = click.option(
    "--data", type=click.Path(exists=True, path_type=Path), required=True,
    help="A dataset folder from `digitloc-data build` or `digitloc-data detection` (where held-out photos are "
         "scored: its val and test splits, or one split's .npz).")
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Random seed: the same seed, the same result.")
framing_option = click.option(
    "--framing", "framing_dirs", multiple=True, type=click.Path(file_okay=False),
    help="SVHN folder (repeatable): also the framing evaluation, its held-out one-digit photos re-framed at digit "
         "height shares 0.2-0.9 (centre moved by up to 0.15; beyond the photo a blurred fill).")


def kind_option(default: str = "real") -> Decorator:
    """--kind: which samples of a split a command reads (scoring: the real photos; a preview: all)."""
    return click.option("--kind", type=click.Choice((*KINDS, KIND_ALL)), default=default, show_default=True,
                        help="Which samples: real one-digit photos, crops of multi-digit photos, synthetic photos, "
                             "or all.")


def svhn_option(required: bool = False) -> Decorator:
    """--svhn: SVHN-format folders to read (repeatable)."""
    return click.option("--svhn", "svhn", multiple=True, required=required, type=click.Path(file_okay=False),
                        help="SVHN-format folder: photos and digitStruct.json or .mat (repeatable).")
