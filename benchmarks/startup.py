"""Cold start of the runtime: a fresh interpreter imports digitloc.runtime and opens a session."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

PROBE = """
import json, sys, time
t0 = time.perf_counter()
from digitloc.runtime import Detector
t1 = time.perf_counter()
det = Detector({model!r}, provider={provider!r})
t2 = time.perf_counter()
import numpy as np
det.predict(np.zeros((48, 96, 3), np.uint8))
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "session_s": t2 - t1, "first_predict_s": t3 - t2,
                  "tensorflow_loaded": "tensorflow" in sys.modules, "provider": det.provider}}))
"""


def measure_startup(model: str | None, provider: str = "cpu", repeats: int = 5) -> dict:
    """Median import, session-start and first-prediction times over ``repeats`` fresh processes."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", PROBE.format(model=model, provider=provider)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: float(np.median([r[k] for r in runs])) for k in ("import_s", "session_s", "first_predict_s")}
    med["import_plus_session_s"] = float(np.median([r["import_s"] + r["session_s"] for r in runs]))
    return {**med, "repeats": repeats, "provider": runs[0]["provider"],
            "tensorflow_loaded": any(r["tensorflow_loaded"] for r in runs), "runs": runs}
