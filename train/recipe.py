"""Training recipes: a TOML file of stages (data builds, fits, exports, run records) that
``digitloc-train recipe`` runs in order, each as its own process.

A recipe is what a user reads, diffs and reruns instead of a Makefile's flags::

    [vars]
    sample = "../shared/data/svhn-train-sample/train"

    [[stage]]
    name = "stage1-fit"
    command = "digitloc-train fit"
    options = { data = "data/svhn64", output = "runs/w025-64", size = "64", batchnorm = true }

Options become ``--name value`` (``true``: the bare flag; ``false``: left out; a list: the option
repeated); ``{var}`` in a value is replaced from ``[vars]`` (overridden with ``--set``).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMANDS = ("digitloc-data", "digitloc-train", "digitloc-export", "digitloc-bench")


class RecipeError(ValueError):
    """A recipe that cannot be read or run."""


@dataclass(frozen=True)
class Stage:
    name: str
    argv: tuple[str, ...]  # the command's words and its options, variables filled in


def _flags(options: dict[str, Any], fill: Any) -> list[str]:
    out: list[str] = []
    for key, value in options.items():
        flag = f"--{key}"
        if value is True:
            out.append(flag)
        elif value is False:
            continue
        elif isinstance(value, list):
            for item in value:
                out += [flag, fill(str(item))]
        else:
            out += [flag, fill(str(value))]
    return out


def load_recipe(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> list[Stage]:
    """The stages of a recipe file, in order, with ``[vars]`` (and ``overrides``) filled in."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{path}: not a TOML recipe ({exc})") from None
    variables = {str(k): str(v) for k, v in data.get("vars", {}).items()}
    unknown = set(overrides or {}) - set(variables)
    if unknown:
        raise RecipeError(f"{path}: --set names no variable of the recipe: {', '.join(sorted(unknown))}")
    variables.update(overrides or {})

    def fill(text: str) -> str:
        try:
            return text.format(**variables)
        except (KeyError, IndexError, ValueError) as exc:
            raise RecipeError(f"{path}: {text!r} names an unknown variable ({exc})") from None

    stages, names = [], set()
    for i, raw in enumerate(data.get("stage", []), start=1):
        name, command = raw.get("name"), str(raw.get("command", ""))
        if not name or name in names:
            raise RecipeError(f"{path}: stage {i} needs a name of its own")
        words = command.split()
        if not words or words[0] not in COMMANDS:
            raise RecipeError(f"{path}: stage {name}: command must start with one of {', '.join(COMMANDS)}")
        args = [fill(str(a)) for a in raw.get("args", [])]
        stages.append(Stage(name, (*words, *args, *_flags(raw.get("options", {}), fill))))
        names.add(name)
    if not stages:
        raise RecipeError(f"{path}: holds no [[stage]]")
    return stages


def select(stages: list[Stage], only: tuple[str, ...] = (), start: str | None = None) -> list[Stage]:
    """The stages to run: those matching any ``only`` pattern (shell-style), from ``start`` on."""
    if start is not None:
        names = [s.name for s in stages]
        if start not in names:
            raise RecipeError(f"--from {start}: no such stage (stages: {', '.join(names)})")
        stages = stages[names.index(start):]
    if only:
        stages = [s for s in stages if any(fnmatch.fnmatchcase(s.name, pattern) for pattern in only)]
        if not stages:
            raise RecipeError(f"--only {' '.join(only)}: matches no stage")
    return stages


def executable(command: str) -> str:
    """The console script of ``command`` beside this Python (its venv), else on PATH."""
    beside = Path(sys.executable).parent / command
    if beside.exists():
        return str(beside)
    found = shutil.which(command)
    if found is None:
        raise RecipeError(f"{command}: not installed")
    return found
