"""digitStruct readers (.mat v7.3 vs JSON), conversion and checks."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from digitloc.annotations import AnnotationError, read_json, read_mat
from digitloc.annotations.check import check_folder
from digitloc.annotations.dataset.cli import main

from helpers import make_svhn_folder, write_digitstruct_mat

ENTRIES = [
    {"filename": "1.png", "boxes": [
        {"label": 1.0, "left": 246.0, "top": 77.0, "width": 81.0, "height": 219.0},
        {"label": 9.0, "left": 323.0, "top": 81.0, "width": 96.0, "height": 219.0}]},
    {"filename": "2.png", "boxes": [{"label": 10.0, "left": 17.0, "top": 5.0, "width": 12.0, "height": 30.0}]},
    {"filename": "23.png", "boxes": [
        {"label": 2.0, "left": 1.0, "top": 2.0, "width": 3.0, "height": 4.0},
        {"label": 10.0, "left": 5.0, "top": 6.0, "width": 7.0, "height": 8.0},
        {"label": 3.0, "left": 9.0, "top": 10.0, "width": 11.0, "height": 12.0}]},
]


def test_mat_and_json_readers_agree(tmp_path: Path) -> None:
    mat = tmp_path / "digitStruct.mat"
    write_digitstruct_mat(mat, ENTRIES)
    (tmp_path / "digitStruct.json").write_text(json.dumps(ENTRIES))
    from_mat = read_mat(mat)
    from_json = read_json(tmp_path / "digitStruct.json")
    assert from_mat == from_json
    assert [r.filename for r in from_mat] == ["1.png", "2.png", "23.png"]
    assert [b.digit for b in from_mat[2].boxes] == [2, 0, 3]  # label 10 is the digit 0
    assert from_mat[1].boxes[0].digit == 0
    assert from_mat[0].boxes[1].xyxy == (323.0, 81.0, 419.0, 300.0)


def test_convert_cli_round_trips(tmp_path: Path) -> None:
    mat = tmp_path / "digitStruct.mat"
    write_digitstruct_mat(mat, ENTRIES)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, ["convert", str(mat), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == ENTRIES
    again = CliRunner().invoke(main, ["convert", str(mat), "-o", str(out)])
    assert again.exit_code != 0 and "already exists" in again.output


def test_mat_of_another_layout_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.mat"
    with h5py.File(other, "w") as f:
        f.create_dataset("X", data=np.zeros(3))
    with pytest.raises(AnnotationError, match="no digitStruct group"):
        read_mat(other)
    not_hdf5 = tmp_path / "old.mat"
    not_hdf5.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(100))
    with pytest.raises(AnnotationError, match="not a MATLAB v7.3"):
        read_mat(not_hdf5)
    result = CliRunner().invoke(main, ["convert", str(not_hdf5), "-o", str(tmp_path / "x.json")])
    assert result.exit_code == 1 and "old.mat" in result.output
    assert not (tmp_path / "x.json").exists()


def test_bad_labels_raise_or_are_reported(tmp_path: Path) -> None:
    bad = [{"filename": "a.png", "boxes": [{"label": 11.0, "left": 0, "top": 0, "width": 3, "height": 3},
                                           {"label": 4.0, "left": 0, "top": 0, "width": 3, "height": 3}]}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match=r"label 11.0 is outside 1..10"):
        read_json(path)
    problems: list = []
    records = read_json(path, problems)
    assert records == []  # the photo is dropped whole: its 4 alone would read as another number
    assert len(problems) == 1 and problems[0].path == "a.png" and "photo dropped, box 0 is bad" in problems[0].reason


def test_check_reports_every_kind_of_problem(tmp_path: Path) -> None:
    entries = [
        {"filename": "ok.png", "boxes": [{"label": 3, "left": 10, "top": 5, "width": 10, "height": 20}]},
        {"filename": "over.png", "boxes": [{"label": 5, "left": -2, "top": 5, "width": 10, "height": 20}]},
        {"filename": "empty.png", "boxes": [{"label": 5, "left": 10, "top": 5, "width": 0, "height": 20}]},
    ]
    folder = make_svhn_folder(tmp_path / "svhn", entries)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    data = entries + [{"filename": "corrupt.png", "boxes": entries[0]["boxes"]},
                      {"filename": "missing.png", "boxes": entries[0]["boxes"]}]
    (folder / "digitStruct.json").write_text(json.dumps(data))
    report = check_folder(folder)
    assert report.images == 5
    assert report.clipped_boxes == 1 and report.worst_overshoots[0] == (2.0, "over.png")
    assert [p.path for p in report.empty_boxes] == ["empty.png"]
    assert sorted(p.path for p in report.bad_images) == ["corrupt.png", "missing.png"]
    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 1
    assert "corrupt.png: unreadable or corrupt image" in result.output
    assert "missing.png: missing image" in result.output


def test_check_on_the_real_sample(svhn_sample: Path) -> None:
    report = check_folder(svhn_sample)
    assert report.images == 2000 and report.digits == 4434
    assert report.digits_per_image[1] == 272
    assert report.ok  # SVHN's 1-2 px overshoots are clipped, not errors
    assert 0 < report.clipped_boxes <= 18
