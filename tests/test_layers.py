"""The layers point down: runtime <- annotations readers <- annotations.dataset / metrics / charts <- train <- export
<- benchmarks / serve, with no import cycle, and export and benchmarks borrow from train only its Keras model."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Each part, lowest first: (name, its module prefixes, its folder and the modules of it that are files there).
PARTS = {
    "runtime": ("digitloc.runtime",),
    "readers": ("digitloc.annotations.digitstruct", "digitloc.annotations.check"),
    "shared": ("digitloc.annotations.dataset", "digitloc.annotations.metrics", "digitloc.annotations.detmetrics",
               "digitloc.annotations.charts"),
    "train": ("digitloc.train",),
    "export": ("digitloc.export",),
    "benchmarks": ("digitloc.benchmarks",),
    "serve": ("digitloc.serve",),
}
# What each part may import besides itself (benchmarks and serve stand side by side at the top).
BELOW = {"runtime": (), "readers": ("runtime",), "shared": ("runtime", "readers"),
         "train": ("runtime", "readers", "shared"), "export": ("runtime", "readers", "shared", "train"),
         "benchmarks": ("runtime", "readers", "shared", "train", "export"),
         "serve": ("runtime", "readers", "shared", "train", "export")}
# Export and benchmarks import train only to load and run a Keras model (and read the run folder it sits in),
# and for the names of the detector's layers int8 keeps in float (a module without Keras).
TRAIN_FOR_KERAS = {"digitloc.train.model": {"load_model", "keras_predict", "predict_detections", "ModelError"},
                   "digitloc.train.record": {"RunRecord"},
                   "digitloc.train.int8grid": {"DETECTOR_FLOAT"}}
FOLDERS = {"runtime": "runtime", "annotations": "annotations", "train": "train", "export": "export",
           "benchmarks": "benchmarks", "serve": "serve"}


def part_of(module: str) -> str | None:
    """The part a digitloc module belongs to (the package ``digitloc.annotations`` itself: the readers)."""
    if module == "digitloc.annotations":
        return "readers"
    for part, prefixes in PARTS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return part
    return None


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the package, by its import name."""
    found = {}
    for folder in FOLDERS.values():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(("digitloc", *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(source: str) -> list[tuple[str, tuple[str, ...]]]:
    """The digitloc modules ``source`` imports anywhere (inside functions too), each with the names it takes."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, ()) for a in node.names if a.name.startswith("digitloc")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("digitloc"):
            names = tuple(a.name for a in node.names)
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in modules()]
            out += [(m, ()) for m in submodules] or [(node.module, names)]
    return out


def wrong_imports(name: str, source: str) -> list[str]:
    """The imports of module ``name`` (its text ``source``) that point up, or take more than a Keras model from train."""
    here, wrong = part_of(name), []
    for target, names in imports(source):
        there = part_of(target)
        if there is None or there == here:
            continue
        if there not in BELOW[here]:
            wrong.append(f"{name} ({here}) imports {target} ({there})")
        elif there == "train" and here in ("export", "benchmarks") and not (
                names and set(names) <= TRAIN_FOR_KERAS.get(target, set())):
            wrong.append(f"{name} takes {', '.join(names) or target} from train: only its Keras model may be")
    return wrong


def test_every_import_points_down_and_train_lends_only_its_keras_model() -> None:
    wrong = [w for name, path in modules().items() for w in wrong_imports(name, path.read_text())]
    assert wrong == []


def test_the_import_check_sees_a_wrong_import() -> None:
    # The check is not vacuous: an import up (even inside a function) and a borrowed training helper are caught.
    source = ("from digitloc.runtime.contract import box_iou\n"
              "def f():\n    from digitloc.train.model import load_model\n")
    assert wrong_imports("digitloc.runtime.x", source) == [
        "digitloc.runtime.x (runtime) imports digitloc.train.model (train)"]
    assert wrong_imports("digitloc.export.x", source) == []
    assert wrong_imports("digitloc.benchmarks.x", "from digitloc.train.fit import train\n") == [
        "digitloc.benchmarks.x takes train from train: only its Keras model may be"]
    assert wrong_imports("digitloc.annotations.metrics", "import digitloc.train.plots\n") == [
        "digitloc.annotations.metrics (shared) imports digitloc.train.plots (train)"]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), as the path around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (found := walk(nxt, [*trail, node])):
                return found
        state[node] = 2
        return None

    return next((c for name in sorted(graph) if name not in state and (c := walk(name, []))), None)


def test_no_import_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check sees one
    graph = {name: {t for t, _ in imports(path.read_text()) if t in modules() and t != name and not name.startswith(t + ".")}
             for name, path in modules().items()}  # a module importing its own package is no cycle
    assert find_cycle(graph) is None


def test_a_fresh_interpreter_loads_nothing_above_each_part() -> None:
    # Import every module of a part (module level) in a fresh interpreter: nothing of a part above it is loaded.
    failures = []
    for part in PARTS:
        names = sorted(n for n in modules() if part_of(n) == part and not n.endswith("__main__"))
        code = ("import importlib, sys\n"
                f"for name in {names!r}: importlib.import_module(name)\n"
                "print('\\n'.join(m for m in sys.modules if m.startswith('digitloc.')))")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        loaded = run.stdout.split()
        above = [m for m in loaded if part_of(m) not in (part, *BELOW[part], None)]
        if above:
            failures.append(f"{part}: {above}")
    assert failures == []
