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
    for package in ("runtime", "annotations", "train", "export", "benchmarks", "serve"):
        assert f"digitloc/{package}/__init__.py" in names
    assert not any(n.startswith(("tests/", "digitloc/tests")) for n in names)


def test_default_model_is_found_and_loads() -> None:
    from digitloc.runtime import Detector

    path = default_model_path()
    assert path.name == DEFAULT_MODEL_NAME and path.is_file()
    detector = Detector(provider="cpu")
    assert detector.info.precision == "int8-static" and detector.input_size == (64, 128)
