"""Whole numbers read on a detection build's validation photos, per refine share (a detector's second pass).

    python scripts/refine_share_sweep.py models/digitloc-detector-fp32.onnx models/digitloc-detector-int8.onnx \\
        --validation-of data/det192x96-d -o benchmarks/results/detector/refine-share --force

The runtime's ``Detector`` reads every photo as a user's (``refine_share`` set, everything else as shipped),
so the figure is the number a user is shown. Only validation photos (never trained on; not
svhn-test-sample/eval): ``DETECTOR_REFINE_SHARE`` is chosen here. Writes sweep.json, sweep.md and
sweep.png (numbers read per share, one line per model, the one-pass figure dashed).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

DEFAULT_SHARES = "0.3,0.35,0.4,0.425,0.45,0.475,0.5,0.55,0.6"


def _shares(text: str) -> list[float]:
    try:
        shares = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: give shares as numbers separated by commas") from None
    if not shares or not all(0.0 < s < 1.0 for s in shares):
        raise click.BadParameter(f"{text!r}: every share must be within 0..1 (exclusive)")
    return shares


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--validation-of", "build", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A detection build (digitloc-data detection): its validation photos are read.")
@click.option("--shares", default=DEFAULT_SHARES, show_default=True, help="Refine shares to read at, comma-separated.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite a sweep already in OUTPUT.")
def main(models: tuple[Path, ...], build: Path, shares: str, output: Path, force: bool) -> None:
    """Read the validation photos of BUILD with each of MODELS at each refine share; one line per reading."""
    from digitloc.annotations.dataset.detection import validation_photos
    from digitloc.annotations.detmetrics import detection_figures
    from digitloc.benchmarks.numbers import read_photos
    from digitloc.runtime.cpuinfo import cpu_report
    from digitloc.runtime.detector import DETECTOR_REFINE_SHARE, Detector
    from digitloc.runtime.fileio import OutputExistsError, atomic_write_text, check_writable

    values = _shares(shares)
    try:
        check_writable(output / "sweep.json", force)
    except (OutputExistsError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    photos = validation_photos(build)
    rows = []
    for path in models:
        detector = Detector(path, provider="cpu")
        for share in (None, *values):
            detector.refine = share is not None
            if share is not None:
                detector.refine_share = share
            results, _ = read_photos(detector, photos)
            figures = detection_figures(results)
            exact = sum(r.number == r.true_number for r in results)
            rows.append({"model": path.name, "refine_share": share, "numbers_exact": exact, "photos": len(results),
                         **{k: figures[k] for k in ("number_accuracy", "digit_recall", "digit_precision")}})
            click.echo(f"{path.name} {'one pass' if share is None else f'share {share:g}'}: {exact}/{len(results)} "
                       f"numbers, recall {figures['digit_recall']:.3f}, precision {figures['digit_precision']:.3f}")
    command = ("python scripts/refine_share_sweep.py " + " ".join(str(m) for m in models)
               + f" --validation-of {build} --shares {shares} -o {output} --force")
    payload = {"command": command, "cpu": cpu_report()["summary"], "shipped_share": DETECTOR_REFINE_SHARE, "rows": rows}
    atomic_write_text(output / "sweep.json", json.dumps(payload, indent=2) + "\n")
    lines = [f"Command: `{command}`", "", f"CPU: {payload['cpu']}", "",
             f"Validation photos of {build} (never trained on). Shipped share: {DETECTOR_REFINE_SHARE}.", "",
             "| model | refine share | numbers exact | digit recall | digit precision |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {'one pass' if r['refine_share'] is None else r['refine_share']} | "
              f"{r['numbers_exact']}/{r['photos']} ({r['number_accuracy']:.3f}) | {r['digit_recall']:.3f} | "
              f"{r['digit_precision']:.3f} |" for r in rows]
    atomic_write_text(output / "sweep.md", "\n".join(lines) + "\n")
    _chart(rows, values, output / "sweep.png")
    click.echo(f"wrote {output / 'sweep.md'}, sweep.json, sweep.png")


def _chart(rows: list[dict], shares: list[float], path: Path) -> None:
    """Numbers read per share, one line per model; its one-pass figure dashed in the same colour."""
    from digitloc.annotations.charts import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        line = ax.plot(shares, [r["numbers_exact"] for r in mine if r["refine_share"] is not None], marker="o",
                       label=name)[0]
        ax.axhline([r["numbers_exact"] for r in mine if r["refine_share"] is None][0], ls="--",
                   color=line.get_color(), lw=1)
    ax.set_xlabel("refine share (digits' height share of the second window)")
    ax.set_ylabel(f"numbers read exactly (of {rows[0]['photos']})")
    ax.set_title("Validation photos: refine share (dashed: one pass)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
