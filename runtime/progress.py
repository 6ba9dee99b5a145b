"""The one progress helper: a tqdm bar on stderr with counts and rate.

On a terminal it refreshes twice a second; into a log file every 15 s, so a
background job's log shows progress without filling up. DIGITLOC_PROGRESS=0
turns bars off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A progress bar over ``iterable`` (or a manual one with ``total=``)."""
    tty = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if tty else 15.0)
    return tqdm(iterable, file=sys.stderr, disable=os.environ.get("DIGITLOC_PROGRESS") == "0",
                dynamic_ncols=tty, ascii=not tty, **kwargs)
