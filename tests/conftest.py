"""Shared fixtures: paths to the real sample beside the repo, tiny generated data."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("DIGITLOC_PROGRESS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# provider "auto" probes onnxruntime against OpenVINO where OpenVINO is installed: its cache never the user's.
os.environ["DIGITLOC_CACHE_DIR"] = tempfile.mkdtemp(prefix="digitloc-test-cache-")
atexit.register(shutil.rmtree, os.environ["DIGITLOC_CACHE_DIR"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = Path(os.environ.get("DIGITLOC_SHARED", REPO.parent / "shared")) / "data" / "svhn-train-sample" / "train"


@pytest.fixture(scope="session")
def svhn_sample() -> Path:
    """The real SVHN sample of ../shared/data, or of $DIGITLOC_SHARED (``make test SHARED=...`` sets it).
    Missing, its tests skip on a developer's machine and fail under CI (``CI=true``)."""
    if not (SHARED_SAMPLE / "digitStruct.json").is_file():
        message = f"real SVHN sample not found at {SHARED_SAMPLE} (set DIGITLOC_SHARED or make SHARED=...)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-head model trained briefly on toy bars, saved as run/model.keras with a dataset
    folder beside it (so exports carry training metadata and have real calibration data)."""
    import keras
    import numpy as np

    from digitloc.annotations.dataset.data import DataSet
    from digitloc.train.fit import TrainConfig, compile_model
    from digitloc.train.model import ModelConfig, build_model

    from helpers import toy_data

    root = tmp_path_factory.mktemp("tiny")
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 256), ("val", 64)):
        images, boxes, labels = toy_data(n, seed=len(split))
        DataSet(images, boxes, labels.astype(np.uint8), np.array(["crop"] * n),
                np.array([f"toy/{i}" for i in range(n)])).save(data / f"{split}.npz")
    keras.utils.set_random_seed(0)
    cfg = ModelConfig(input_size=(32, 32), width=0.125, batchnorm=True, box_units=(16,), class_units=(32,), dropout=0.1)
    model = build_model(cfg)
    compile_model(model, TrainConfig(data=str(data), model=cfg), 3e-3)
    images, boxes, labels = toy_data(256, seed=5)
    model.fit(images, {"bbox": boxes, "digit": labels}, epochs=12, batch_size=32, verbose=0)
    run = root / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps(TrainConfig(data=str(data), model=cfg).to_dict()))
    return run


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run: Path) -> Path:
    """The tiny model exported to fp32 ONNX through the real export pipeline."""
    from digitloc.export.api import ExportConfig, export_model
    from digitloc.export.quantize import Fp32Config

    out = tiny_run.parent / "tiny-fp32.onnx"
    export_model(tiny_run / "model.keras", ExportConfig(output=out, quant=Fp32Config()))
    return out
