"""Which detector runs to average (``digitloc-train average-weights``): a greedy model soup.

    python scripts/greedy_soup.py runs/det192x96-s9 runs/det192x96-s10 ... --val-data data/det192x96-d \\
        -o bench/greedy --force

The runs (one design, fine-tuned from one ancestor) are ordered by the whole-number accuracy their own
evaluation.json records on the validation photos; each is added to the average only if the average then
reads at least as many validation numbers as before (Keras, one pass, its threshold chosen again as
average-weights does). The uniform average of all the runs is measured too. Only validation photos
(never svhn-test-sample/eval): the choice made here is judged on them with the runtime afterwards, under a
rule written first. Writes greedy.json and greedy.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--val-data", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Detection build whose val.npz to read.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an earlier greedy.json / greedy.md there.")
def main(runs: tuple[Path, ...], val_data: Path, output: Path, force: bool) -> None:
    """Greedy and uniform weight averages of RUNS, scored on VAL_DATA's validation photos."""
    from digitloc.annotations.dataset.detection import load_detection
    from digitloc.runtime.fileio import atomic_write_text
    from digitloc.train.detfit import mean_weights, validation_evaluation
    from digitloc.train.model import load_model

    if len(runs) < 2:
        raise click.UsageError("give two runs or more")
    if not force and any((output / n).exists() for n in ("greedy.json", "greedy.md")):
        raise click.UsageError(f"{output}: greedy.json or greedy.md exists (use --force)")
    val = load_detection(val_data / "val.npz")
    own = {r: json.loads((r / "evaluation.json").read_text())["figures"]["number_accuracy"] for r in runs}
    models = {r: load_model(r / "model.keras") for r in runs}
    weights = {r: m.get_weights() for r, m in models.items()}  # copies: the model set below is one of them
    model = models[runs[0]]

    def numbers(names: list[Path]) -> tuple[int, float]:
        model.set_weights(mean_weights([weights[r] for r in names]))
        ev = validation_evaluation(model, val)
        return round(ev["figures"]["number_accuracy"] * ev["figures"]["photos"]), ev["min_score"]

    alone = {r: numbers([r]) for r in runs}
    order = sorted(runs, key=lambda r: -own[r])  # stable: ties keep the order given
    steps = []
    chosen = [order[0]]
    best, threshold = alone[order[0]]
    steps.append({"runs": [str(r) for r in chosen], "numbers": best, "threshold": threshold, "kept": True})
    for run in order[1:]:
        read, threshold = numbers([*chosen, run])
        kept = read >= best
        steps.append({"runs": [str(r) for r in (*chosen, run)], "numbers": read, "threshold": threshold, "kept": kept})
        click.echo(f"{' + '.join(r.name for r in (*chosen, run))}: {read} numbers {'(kept)' if kept else ''}")
        if kept:
            chosen, best = [*chosen, run], read
    singles = {str(r): n for r, (n, _) in alone.items()}
    uniform = numbers(list(runs))[0]
    payload = {"val_data": str(val_data), "photos": int(len(val["images"])), "own_number_accuracy":
               {str(r): v for r, v in own.items()}, "alone": singles, "uniform": uniform, "steps": steps,
               "chosen": [str(r) for r in chosen], "chosen_numbers": best}
    lines = [f"Validation photos of {val_data} ({payload['photos']}), Keras, one pass; numbers read exactly.", "",
             "| runs averaged | numbers | kept |", "|---|---|---|"]
    lines += [f"| {' + '.join(Path(r).name for r in s['runs'])} | {s['numbers']} | {'yes' if s['kept'] else 'no'} |"
              for s in steps]
    lines += ["", "Alone: " + ", ".join(f"{Path(r).name} {n}" for r, n in singles.items()),
              f"Uniform average of all {len(runs)}: {uniform}.", "",
              f"Chosen: {' + '.join(Path(r).name for r in chosen)} ({best})."]
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "greedy.json", json.dumps(payload, indent=2))
    atomic_write_text(output / "greedy.md", "\n".join(lines) + "\n")
    click.echo(f"wrote {output / 'greedy.json'}, {output / 'greedy.md'}")


if __name__ == "__main__":
    main()
