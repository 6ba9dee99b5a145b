"""The run folder, owned in one place: what ``digitloc-train fit`` writes and export, ``keep-run``
and the plots read (config, evaluation figures, history, the dataset manifest it leads to).

No TensorFlow here: export reads a run's record before it loads a model.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitloc.runtime.fileio import atomic_write_text

MODEL = "model.keras"  # best on validation
LAST = "last.keras"  # for --resume
CONFIG = "config.json"
EVALUATION = "evaluation.json"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
PLOTS = ("curves.png", "confusion.png", "val-predictions.png")
FAILURES_PLOT = "failures.png"  # only when some real validation photo failed
RUN_FILES = (MODEL, LAST, CONFIG, HISTORY_CSV, HISTORY_JSON, EVALUATION, *PLOTS, FAILURES_PLOT)
# What keep-run copies (the weights only on request, without optimizer state); a detector's run has
# curves but no confusion matrix or prediction grid (its figures are in evaluation.json).
KEPT = (CONFIG, HISTORY_CSV, HISTORY_JSON, EVALUATION, PLOTS[0])
OPTIONAL = (*PLOTS[1:], FAILURES_PLOT)
# An averaged run (``digitloc-train average-weights``: config.json names its runs under "soup") was not
# trained: it has no history of its own, and its curves are those of the runs averaged.
AVERAGED_KEPT = (CONFIG, EVALUATION)


class RunError(ValueError):
    """A run folder lacks what is asked of it."""


@dataclass(frozen=True)
class RunRecord:
    """One run folder."""

    folder: Path

    @classmethod
    def of_model(cls, model_path: str | os.PathLike[str]) -> RunRecord:
        """The run a saved model belongs to: the folder it sits in."""
        return cls(Path(model_path).parent)

    def path(self, name: str) -> Path:
        return self.folder / name

    def _json(self, name: str) -> Any:
        path = self.path(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def _write(self, name: str, value: Any) -> None:
        atomic_write_text(self.path(name), json.dumps(value, indent=1))

    def config(self) -> dict[str, Any] | None:
        """config.json (the TrainConfig as a dict), or None when the folder has none."""
        return self._json(CONFIG)

    def write_config(self, config: dict[str, Any]) -> None:
        self._write(CONFIG, config)

    def evaluation(self) -> dict[str, Any] | None:
        """evaluation.json (figures per held-out group), or None."""
        return self._json(EVALUATION)

    def write_evaluation(self, figures: dict[str, Any]) -> None:
        self._write(EVALUATION, figures)

    def history(self) -> list[dict[str, float]] | None:
        """history.json (one dict per epoch), or None."""
        return self._json(HISTORY_JSON)

    def epochs(self) -> int:
        """Epochs logged so far (history.csv, appended to while training)."""
        path = self.path(HISTORY_CSV)
        if not path.exists():
            return 0
        with path.open() as handle:
            return sum(1 for _ in csv.DictReader(handle))

    def write_history_json(self) -> None:
        """history.json from the CSV log."""
        with self.path(HISTORY_CSV).open() as handle:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        self._write(HISTORY_JSON, rows)

    def clear(self) -> None:
        """Remove an earlier run's files (history.csv is appended to, so nothing may leak in)."""
        for name in RUN_FILES:
            self.path(name).unlink(missing_ok=True)

    def data_folder(self) -> Path | None:
        """The dataset folder the run trained on (config.json's ``data``), or None."""
        config = self.config()
        return Path(config["data"]) if config and config.get("data") else None

    def manifest(self) -> dict[str, Any] | None:
        """The manifest.json of the run's dataset, or None."""
        data = self.data_folder()
        path = None if data is None else data / "manifest.json"
        return json.loads(path.read_text()) if path is not None and path.is_file() else None

    def keep(self, to: str | os.PathLike[str], weights: bool = False) -> list[Path]:
        """Copy the record (config, history, evaluation, plots, failures plot and export parity
        reports where present) into ``to``; ``weights`` adds model.keras without optimizer state."""
        config = self.config()
        averaged = isinstance(config, dict) and "soup" in config
        required = AVERAGED_KEPT if averaged else KEPT
        missing = [name for name in required if not self.path(name).is_file()]
        if missing:
            raise RunError(f"{self.folder}: not a finished run (no {', '.join(missing)})")
        to = Path(to)
        to.mkdir(parents=True, exist_ok=True)
        sources = [self.path(name) for name in required]
        sources += [self.path(name) for name in (*KEPT, *OPTIONAL) if name not in required and self.path(name).is_file()]
        sources += sorted((self.folder / "export").glob("*.parity.json"))
        written = [Path(shutil.copy2(src, to / src.name)) for src in sources]
        if weights:
            from digitloc.train.model import load_model

            load_model(self.path(MODEL)).save(to / MODEL)
            written.append(to / MODEL)
        return written
