"""Training recipes: parsing, selection, the shipped recipes' options, and running stages."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from digitloc.train.cli import main
from digitloc.train.recipe import RecipeError, load_recipe, select

from helpers import make_svhn_folder

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_options_become_flags_and_variables_are_filled(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
[vars]
data = "d"
[[stage]]
name = "one"
command = "digitloc-train fit"
args = ["{data}/x"]
options = { data = "{data}", batchnorm = true, resume = false, svhn = ["a", "{data}"], lr = 1e-3 }
''')
    (stage,) = load_recipe(path)
    assert stage.argv == ("digitloc-train", "fit", "d/x", "--data", "d", "--batchnorm", "--svhn", "a", "--svhn", "d",
                          "--lr", "0.001")
    (over,) = load_recipe(path, {"data": "e"})
    assert over.argv[2:5] == ("e/x", "--data", "e")
    with pytest.raises(RecipeError, match="names no variable"):
        load_recipe(path, {"nope": "1"})


@pytest.mark.parametrize("text, message", [
    ('[[stage]]\nname = "a"\ncommand = "rm -rf /"\n', "must start with one of"),
    ('[[stage]]\ncommand = "digitloc-train fit"\n', "needs a name"),
    ('[[stage]]\nname = "a"\ncommand = "digitloc-train fit"\noptions = { data = "{missing}" }\n', "unknown variable"),
    ('[vars]\n', "holds no"),
    ('not toml [', "not a TOML recipe"),
])
def test_bad_recipes_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(_write(tmp_path, text))


def test_select_by_pattern_and_start(tmp_path: Path) -> None:
    text = "".join(f'[[stage]]\nname = "{n}"\ncommand = "digitloc-train fit"\n' for n in ("fit-1", "export-a", "export-b"))
    stages = load_recipe(_write(tmp_path, text))
    assert [s.name for s in select(stages, ("export-*",))] == ["export-a", "export-b"]
    assert [s.name for s in select(stages, start="export-a")] == ["export-a", "export-b"]
    with pytest.raises(RecipeError, match="no such stage"):
        select(stages, start="nope")
    with pytest.raises(RecipeError, match="matches no stage"):
        select(stages, ("zzz*",))


def _command(words: tuple[str, ...]) -> click.Command:
    from digitloc.annotations.dataset.cli import main as data
    from digitloc.benchmarks.cli import main as bench
    from digitloc.export.cli import main as export

    groups = {"digitloc-train": main, "digitloc-data": data, "digitloc-bench": bench}
    if words[0] == "digitloc-export":
        return export
    return groups[words[0]].commands[words[1]]


@pytest.mark.parametrize("name", ["default.toml", "wide-stage.toml", "detector.toml"])
def test_shipped_recipes_name_real_options(name: str) -> None:
    for stage in load_recipe(REPO / "recipes" / name):
        command = _command(stage.argv)
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        flags = {a for a in stage.argv if a.startswith("--")}
        assert flags <= known, f"{stage.name}: unknown options {flags - known}"


def test_recipe_runs_stages_in_order_and_stops_at_a_failure(tmp_path: Path) -> None:
    folder = make_svhn_folder(tmp_path / "svhn", [{"filename": "1.png", "boxes": [
        {"label": 3, "left": 30, "top": 8, "width": 12, "height": 24}]}])
    path = _write(tmp_path, f'''
[vars]
folder = "{folder}"
[[stage]]
name = "check"
command = "digitloc-data check"
args = ["{{folder}}"]
[[stage]]
name = "check-missing"
command = "digitloc-data check"
args = ["{{folder}}/none"]
[[stage]]
name = "never"
command = "digitloc-data check"
args = ["{{folder}}"]
''')
    result = CliRunner().invoke(main, ["recipe", str(path)])
    assert result.exit_code != 0
    assert "[1/3] check: done" in result.output and "[3/3]" not in result.output
    assert "stage check-missing failed" in result.output and "--from check-missing" in result.output
    dry = CliRunner().invoke(main, ["recipe", str(path), "--dry-run", "--from", "never"])
    assert dry.exit_code == 0 and dry.output.strip() == f"[1/1] never: digitloc-data check {folder}"
