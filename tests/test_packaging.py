"""What a regular (non-editable) install ships: the default model, its card and the web page."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from digitloc.runtime.detector import DEFAULT_MODEL_NAME, default_model_path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_models_and_page(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("digitloc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert f"digitloc/models/{DEFAULT_MODEL_NAME}" in names
    assert "digitloc/models/MODEL_CARD.md" in names
    assert "digitloc/serve/page.html" in names
    for package in ("runtime", "annotations", "train", "annotations/dataset", "export", "benchmarks", "serve"):
        assert f"digitloc/{package}/__init__.py" in names
    assert not any(n.startswith(("tests/", "digitloc/tests")) for n in names)


def test_default_model_is_found_and_loads() -> None:
    from digitloc.runtime import Detector

    path = default_model_path()
    assert path.name == DEFAULT_MODEL_NAME and path.is_file()
    detector = Detector(provider="cpu")
    assert detector.info.precision == "int8-static" and detector.input_size == (64, 128)


def _blocked_run(blocked: tuple[str, ...], command: str, args: list[str]) -> subprocess.CompletedProcess:
    """Run ``command``'s click entry point in a fresh interpreter where ``blocked`` modules cannot be
    imported, as in an install without their extra."""
    code = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
            f"from {command} import main\nmain({args!r}, prog_name='x')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    result = _blocked_run(("tensorflow", "keras"), "digitloc.train.cli", ["fit", "--data", str(tmp_path), "-o",
                                                                         str(tmp_path / "run")])
    assert result.returncode == 1
    assert result.stderr == "error: digitloc-train needs the train extra: pip install 'digitloc[train]'\n"
    (tmp_path / "m.keras").write_bytes(b"")
    result = _blocked_run(("tensorflow", "keras", "tf2onnx", "onnx"), "digitloc.export.cli",
                          [str(tmp_path / "m.keras"), "-o", str(tmp_path / "m.onnx")])
    assert result.returncode == 1 and result.stderr == (
        "error: digitloc-export needs the train and export extras: pip install 'digitloc[train,export]'\n")
    result = _blocked_run(("uvicorn", "starlette"), "digitloc.serve.cli", ["--port", "0"])
    assert result.returncode == 1
    assert result.stderr == "error: digitloc-serve needs the serve extra: pip install 'digitloc[serve]'\n"


def test_a_missing_module_of_no_extra_still_raises() -> None:
    import click
    import pytest
    from click.testing import CliRunner

    from digitloc.runtime.options import needs_extras

    @needs_extras("digitloc-x", "train")
    @click.command()
    @click.argument("module")
    def cmd(module: str) -> None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    result = CliRunner().invoke(cmd, ["matplotlib.pyplot"])
    assert result.exit_code == 1 and result.output == (
        "error: digitloc-x needs the train extra: pip install 'digitloc[train]'\n")
    result = CliRunner().invoke(cmd, ["ai_edge_litert"])
    assert result.output == "error: digitloc-x needs the peers extra: pip install 'digitloc[peers]'\n"
    with pytest.raises(ModuleNotFoundError):
        CliRunner().invoke(cmd, ["not_an_extra"], catch_exceptions=False)
