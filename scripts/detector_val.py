"""Numbers read on a detection build's validation photos (whole, as they are), one pass and with refine.

The detection build keeps a seeded tenth of its photos whole for validation (never trained on, not
svhn-test-sample/eval); the refine pass and the training stages are chosen on them. Usage:
``python scripts/detector_val.py MODEL.onnx [MODEL.onnx ...] [--data data/det192x96]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from digitloc.annotations.dataset.detection import load_photos, val_photo
from digitloc.benchmarks.numbers import numbers_table


def validation_photos(data: Path) -> list:
    """The whole validation photos of the detection build in ``data`` (its manifest names the folders)."""
    config = json.loads((data / "manifest.json").read_text())["config"]
    return [p for p in load_photos(config["svhn"]) if val_photo(p.origin, config["val_share"], config["seed"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/det192x96"))
    args = parser.parse_args()
    photos = validation_photos(args.data)
    print(f"{len(photos)} validation photos of {args.data}")
    for row in numbers_table(args.models, photos):
        print(f"{row['model']:50s} numbers {row['number_accuracy']:.3f} recall {row['digit_recall']:.3f} "
              f"precision {row['digit_precision']:.3f}")


if __name__ == "__main__":
    main()
