"""Pick the bundled sample photos and make the sample video from them.

Photos: the first held-out (test split) one-digit SVHN photos in file-name order with
distinct digits, copied from the shared sample. Video: each photo stretched to
640x480, shown for 48 frames at 24 fps (mp4v), so digitloc-run has a real video to read.
Run: python scripts/make_samples.py --data data/svhn64 --svhn ../shared/data/svhn-train-sample/train
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2

from digitloc.annotations.dataset.data import DataSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder whose test split is held out")
    parser.add_argument("--svhn", type=Path, required=True, help="the SVHN folder the photos come from")
    parser.add_argument("--out", type=Path, default=Path("samples"))
    parser.add_argument("--count", type=int, default=5)
    args = parser.parse_args()

    test = DataSet.load(args.data / "test.npz")
    real = sorted(((o.split("/", 1)[1], int(d)) for o, d, k in zip(test.origins, test.labels, test.kinds, strict=True)
                   if k == "real"), key=lambda t: int(Path(t[0]).stem))
    chosen, digits = [], set()
    for name, digit in real:
        if digit not in digits:
            chosen.append(name)
            digits.add(digit)
        if len(chosen) == args.count:
            break
    args.out.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(args.out / "sample-640x480.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 24.0, (640, 480))
    for name in chosen:
        shutil.copyfile(args.svhn / name, args.out / f"svhn-{name}")
        photo = cv2.imread(str(args.svhn / name))
        # Stretched like the model's own input, so each frame shows the model what the photo does.
        frame = cv2.resize(photo, (640, 480), interpolation=cv2.INTER_LINEAR)
        for _ in range(48):
            writer.write(frame)
    writer.release()
    print("samples:", ", ".join(chosen))


if __name__ == "__main__":
    main()
