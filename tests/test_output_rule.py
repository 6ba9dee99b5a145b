"""The one output rule (runtime/fileio.py) where it is not digitloc-run's: digitloc-export (issue 27, items 13-14)."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from digitloc.runtime.fileio import OutputRule


def test_export_never_writes_over_its_model_or_where_it_cannot(tiny_run: Path, tmp_path: Path) -> None:
    """Item 14: -o naming the model being read, even with --force, is one line and the model is kept.
    Item 13: -o under /proc (or under a file) is one line, no traceback."""
    from digitloc.export.cli import main

    model = tmp_path / "self.keras"
    shutil.copy(tiny_run / "model.keras", model)
    before = model.read_bytes()
    result = CliRunner().invoke(main, [str(model), "-o", str(model), "--force", "--parity-random"])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == f"error: {model}: is the model this run reads; not written", result.output
    assert model.read_bytes() == before
    file = tmp_path / "file"
    file.write_text("x")
    for out, message in ((Path("/proc/m.onnx"), "error: /proc: cannot write there ("),
                         (file / "m.onnx", f"error: {file}: not a folder (a file is in the way)"),
                         (file / "sub" / "m.onnx", f"error: {file / 'sub'}: cannot write there (")):
        result = CliRunner().invoke(main, [str(model), "-o", str(out), "--parity-random"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.stderr.startswith(message), result.stderr
        assert result.stderr.count("\n") == 1


def test_the_rule_compares_files_not_spellings(tmp_path: Path) -> None:
    """Another spelling or a hard link of an input is that input; a second claim of one path is refused."""
    import os

    photo = tmp_path / "a.png"
    photo.write_bytes(b"x")
    os.link(photo, tmp_path / "hard.png")
    rule = OutputRule(inputs=[photo])
    for path in (tmp_path / "." / "a.png", tmp_path / "hard.png"):
        try:
            rule.claim(path, force=True)
        except OSError as exc:
            assert "is an input of this run" in str(exc)
        else:
            raise AssertionError(f"{path} was claimed")
    rule.claim(tmp_path / "out.json")
    try:
        rule.claim(tmp_path / "sub" / ".." / "out.json")
    except OSError as exc:
        assert "is also another output of this run" in str(exc)
    else:
        raise AssertionError("a second claim was accepted")
