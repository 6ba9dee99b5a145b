"""Every option that two commands share is declared once: one type, one help, one default."""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Iterator

import click

CLIS = {"digitloc-data": "digitloc.annotations.dataset.cli", "digitloc-train": "digitloc.train.cli",
        "digitloc-export": "digitloc.export.cli", "digitloc-run": "digitloc.runtime.cli",
        "digitloc-bench": "digitloc.benchmarks.cli", "digitloc-serve": "digitloc.serve.cli"}
# What may differ between the declarations of one name, and why (the rest must be equal).
MAY_DIFFER = {
    # One declaration (runtime.options.output_option): each command names the file or folder it writes.
    "--output": {"help", "type", "default", "required"},
    "--kind": {"default"},  # scoring reads the real photos, a preview every kind
    "--provider": {"default"},  # the start-up benchmark measures the CPU
    "--svhn": {"required"},  # a build may be synthetic only; the photos benchmark needs photos
    "--batches": {"default"},  # latency spans batch 1-32; the round robin of three runtimes times the two ends
    # The one-digit model (digitloc-train fit, digitloc-data build) and the detector (digitloc-train detector,
    # digitloc-data detection) default to their own sizes and training settings; one declaration each.
    "--size": {"default"},
    "--width": {"default"},
    "--batchnorm": {"default"},
    "--no-batchnorm": {"default"},
    "--epochs": {"default"},
    "--batch-size": {"default"},
}
# Declared apart by their owners (digitloc-run's and digitloc-serve's own options, with the serve and IO work);
# listed so that the check stays whole elsewhere, and must still differ (drop a name here once it is shared).
OWNED_ELSEWHERE = {"--json", "--max-pixels", "--workers"}


def commands() -> Iterator[tuple[str, click.Command]]:
    """Every command and subcommand of the six command lines, with the path a user types."""
    def walk(cmd: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    for prog, module in CLIS.items():
        yield from walk(importlib.import_module(module).main, prog)


def describe(param: click.Option) -> dict[str, object]:
    """What a declaration says: its type (with choices, ranges, path rules), flags, help, default, required."""
    t = param.type
    kind: tuple = (type(t).__name__,)
    if isinstance(t, click.Choice):
        kind += tuple(t.choices)
    if isinstance(t, click.Path):
        kind += (t.exists, t.file_okay, t.dir_okay, t.type)
    if isinstance(t, click.types._NumberRangeBase):
        kind += (t.min, t.max)
    return {"type": (*kind, param.multiple, param.is_flag, param.nargs), "help": param.help,
            "default": param.default, "required": param.required}


def conflicts(declared: list[tuple[str, click.Command]]) -> dict[str, list[str]]:
    """Per long option name: the commands whose declaration differs from the first one's, and in what."""
    seen: dict[str, list[tuple[str, dict[str, object]]]] = defaultdict(list)
    for path, cmd in declared:
        for param in cmd.params:
            if isinstance(param, click.Option):
                for name in (o for o in param.opts + param.secondary_opts if o.startswith("--")):
                    seen[name].append((path, describe(param)))
    out = {}
    for name, decls in seen.items():
        first_path, first = decls[0]
        diffs = [f"{path} vs {first_path}: {key}" for path, d in decls[1:] for key in d
                 if d[key] != first[key] and key not in MAY_DIFFER.get(name, ())]
        if diffs:
            out[name] = diffs
    return out


def test_every_shared_option_is_declared_alike() -> None:
    found = conflicts(list(commands()))
    assert {k: v for k, v in found.items() if k not in OWNED_ELSEWHERE} == {}
    assert set(found) == OWNED_ELSEWHERE  # still apart: once one is shared, drop it from OWNED_ELSEWHERE


def test_the_shared_options_are_there() -> None:
    # The walk reaches every command, and the options the issue names are shared by two commands or more.
    paths = [p for p, _ in commands()]
    assert {"digitloc-data build", "digitloc-train fit", "digitloc-export", "digitloc-run", "digitloc-bench ceiling",
            "digitloc-serve"} <= set(paths)
    counts: dict[str, int] = defaultdict(int)
    for _, cmd in commands():
        for param in cmd.params:
            for name in getattr(param, "opts", ()):
                counts[name] += 1
    assert all(counts[n] >= 2 for n in ("--output", "--data", "--kind", "--threads", "--seed", "--framing", "--force",
                                        "--provider", "--size", "--batches"))


def test_a_second_declaration_that_differs_is_caught() -> None:
    @click.command()
    @click.option("--seed", type=int, default=0, help="Random seed.")
    def one(seed: int) -> None:
        """One."""

    @click.command()
    @click.option("--seed", type=int, default=0, help="Seed of the noise.")
    @click.option("--data", type=click.Path(exists=True))
    def two(seed: int, data: str) -> None:
        """Two."""

    @click.command()
    @click.option("--data", type=click.Path())
    def three(data: str) -> None:
        """Three."""

    assert conflicts([("one", one), ("two", two), ("three", three)]) == {
        "--seed": ["two vs one: help"], "--data": ["three vs two: type"]}
