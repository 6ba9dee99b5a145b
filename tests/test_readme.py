"""The README's first screen and its commands (issue 27, item 15)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = ("digitloc-run", "digitloc-serve", "digitloc-data", "digitloc-train", "digitloc-export", "digitloc-bench")


def test_the_first_screen_says_how_to_call_each_command() -> None:
    """What it is, the two commands, how to reach the commands after them, one example per command, and
    no dense table before the first examples."""
    text = README.read_text()
    first = text[:text.index("## What is where")]
    assert "make demo" in first and "make test" in first
    assert "source .venv/bin/activate" in first and ".venv-demo/bin/digitloc-run" in first
    for command in COMMANDS:
        assert re.search(rf"^{command} \S", first, re.M), command
    assert "|" not in first, "a table before the first examples"


def test_every_data_and_run_path_is_built_by_a_command_shown_before() -> None:
    """A ``data/...`` or ``runs/...`` folder a command reads was written (``-o``) by a command above it."""
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    commands = " ".join(blocks).replace("\\\n", " ").splitlines()
    built: set[str] = set()
    for line in commands:
        line = line.split("#", 1)[0]
        written = set(re.findall(r"(?:-o|--output)\s+((?:data|runs)/[\w.-]+)", line))
        for path in re.findall(r"(?<![\w/.-])((?:data|runs)/[\w.-]+)", line):
            if path not in written:
                assert path in built, f"{path} is read before any command shown builds it: {line.strip()}"
        built |= written


def test_one_cpu_is_named_one_way() -> None:
    """The benchmark host is not called Zen 5 on one line and Zen 4 on another."""
    text = README.read_text()
    assert not ("Zen 4" in text and "Zen 5" in text)
    assert "320.8 frames/s |" not in text
