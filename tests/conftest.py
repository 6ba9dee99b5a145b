"""Shared fixtures: paths to the real sample beside the repo, tiny generated data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DIGITLOC_PROGRESS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = Path(os.environ.get("DIGITLOC_SHARED", REPO.parent / "shared")) / "data" / "svhn-train-sample" / "train"


@pytest.fixture(scope="session")
def svhn_sample() -> Path:
    """The real SVHN sample of ../shared/data (present here and in CI)."""
    if not (SHARED_SAMPLE / "digitStruct.json").is_file():
        pytest.skip(f"real SVHN sample not found at {SHARED_SAMPLE}")
    return SHARED_SAMPLE
