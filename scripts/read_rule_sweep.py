"""Numbers a detector reads (refine on) on a build's validation photos, and its training photos with ``train``, once
per value of ``read_digits``' last keyword argument (the rule being tried, patched into runtime/number.py).

Usage: python scripts/read_rule_sweep.py MODEL V1,V2,... [train] [OUT.json]  (from the repository root; the build is
data/det192x96-d). Session 21's rules were patches to ``read_digits`` (``max_cover``, ``end_gap``), reverted; see
models/det192x96-reading-rules-tried/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from digitloc.annotations.dataset.detection import build_photos
from digitloc.annotations.detmetrics import detection_figures, error_breakdown
from digitloc.benchmarks.numbers import read_photos
from digitloc.runtime import number
from digitloc.runtime.detector import Detector


def main() -> None:
    model, values = Path(sys.argv[1]), [float(v) for v in sys.argv[2].split(",")]
    sets = {"val": build_photos("data/det192x96-d", "validation")}
    if len(sys.argv) > 3 and sys.argv[3] == "train":
        sets["train"] = build_photos("data/det192x96-d", "training")
    detector = Detector(model, provider="cpu")
    defaults = list(number.read_digits.__defaults__ or ())
    out = {}
    for value in values:
        defaults[-1] = value
        number.read_digits.__defaults__ = tuple(defaults)
        for name, photos in sets.items():
            results, _ = read_photos(detector, photos)
            right = sum(r.number == r.true_number for r in results)
            figures, errors = detection_figures(results), error_breakdown(results)
            out[f"{name} {value}"] = {"right": right, "photos": len(results), "recall": figures["digit_recall"],
                                      "precision": figures["digit_precision"], "digits": errors["digits"]}
            print(name, value, right, len(results), round(figures["digit_recall"], 4),
                  round(figures["digit_precision"], 4), errors["digits"], flush=True)
    Path(sys.argv[4] if len(sys.argv) > 4 else "sweep.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
