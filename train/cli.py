"""digitloc-train: train the VGG19 two-head model and evaluate saved models."""

from __future__ import annotations

import json
from pathlib import Path

import click

from digitloc.annotations.dataset.options import Decorator, data_option, framing_option, kind_option, seed_option
from digitloc.runtime.fileio import OutputExistsError, atomic_write_text
from digitloc.runtime.options import (
    detector_size_option,
    fail,
    force_option,
    needs_extras,
    output_option,
    size_option,
)
from digitloc.train.model import HEADS


@needs_extras("digitloc-train", "train")
@click.group()
def main() -> None:
    """Train and evaluate digitloc models (TensorFlow/Keras)."""


# Options fit and detector share: one declaration each (the two models default differently).
def width_option(default: float) -> Decorator:
    return click.option("--width", default=default, show_default=True, help="Width multiplier of VGG19's conv blocks.")


def batchnorm_option(default: bool) -> Decorator:
    return click.option("--batchnorm/--no-batchnorm", default=default, show_default=True,
                        help="BatchNorm after each conv.")


def epochs_option(default: int) -> Decorator:
    return click.option("--epochs", default=default, show_default=True,
                        help="Epochs: passes over the train split (or of --steps-per-epoch batches).")


def batch_size_option(default: int) -> Decorator:
    return click.option("--batch-size", default=default, show_default=True, help="Samples per training step.")


lr_option = click.option("--lr", "learning_rate", default=1e-3, show_default=True, help="(Peak) learning rate.")
max_minutes_option = click.option("--max-minutes", type=float, default=None,
                                  help="Stop after this many minutes (the best checkpoint stays).")
steps_per_epoch_option = click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
                                      help="Batches per epoch (default: the whole train split once).")
init_option = click.option("--init", type=click.Path(dir_okay=False, exists=True), default=None,
                           help="Start from this saved model's weights (the same architecture and size): fine-tuning.")


@main.command()
@data_option
@output_option(help="Run folder to write (model, config, history, evaluation, plots).", required=True)
@detector_size_option
@width_option(0.25)
@batchnorm_option(True)
@click.option("--top-k", default=16, show_default=True, help="Digits the exported graph returns per photo (K).")
@epochs_option(10)
@steps_per_epoch_option
@batch_size_option(32)
@lr_option
@max_minutes_option
@init_option
@click.option("--init-backbone", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Start the conv blocks from this saved digitloc model (e.g. a one-digit model of the same width).")
@click.option("--init-layers", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Build the model as the options say and start every layer a saved detector has (same name and "
                   "shape) from it: a run continued into a changed design (--stem-stride, --shared-head).")
@click.option("--stem-stride", type=click.Choice(["1", "2"]), default="1", show_default=True,
              help="2: block 1's first convolution strides by 2 and block 1 is not pooled (a quarter of the "
                   "full-resolution work; the maps keep stride 4).")
@click.option("--shared-head/--two-head-convs", default=False, show_default=True,
              help="One 3x3 convolution feeds both the heatmap and the box outputs (the heads run in float).")
@click.option("--freeze-blocks", type=click.IntRange(0, 5), default=0, show_default=True,
              help="Keep conv blocks 1..N as they start (a trained backbone): no backward pass through them, faster.")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=300, show_default=True,
              help="Steps of linear learning-rate warm-up before the cosine decay.")
@seed_option
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes encoding the batches' targets (several keep a GPU fed).")
@click.option("--act-noise", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Uniform noise of this many int8 steps after each ReLU in training (0: none): decisions that "
                   "int8's rounding does not move.")
@force_option
def detector(data: Path, output: Path, size: tuple[int, int], width: float, batchnorm: bool, top_k: int,
             epochs: int, steps_per_epoch: int | None, batch_size: int, learning_rate: float, max_minutes: float | None,
             init: str | None, init_backbone: str | None, init_layers: str | None, stem_stride: str,
             shared_head: bool, freeze_blocks: int, warmup_steps: int, seed: int, workers: int, act_noise: float,
             force: bool) -> None:
    """Train the digit detector (every digit: centre heatmap and box heads, stride 4); writes OUTPUT.

    Runs under any Keras backend (KERAS_BACKEND=jax on a GPU machine); under one other than
    TensorFlow it stops at the trained weights, and finish-detector makes the inference form."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.train.detector import DetectorConfig
    from digitloc.train.detfit import DetectorTrainConfig, fit_detector
    from digitloc.train.model import ModelError

    if init and (init_layers or init_backbone):
        fail("--init continues a saved detector as it is: it does not go with --init-layers or --init-backbone")
    cfg = DetectorTrainConfig(data=str(data), model=DetectorConfig(input_size=size, width=width,
                                                              batchnorm=batchnorm, top_k=top_k,
                                                              stem_stride=int(stem_stride), shared_head=shared_head),
                              epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                              steps_per_epoch=steps_per_epoch, max_minutes=max_minutes, init=init,
                              init_backbone=init_backbone, init_layers=init_layers, freeze_blocks=freeze_blocks,
                              warmup_steps=warmup_steps,
                              seed=seed, workers=workers, act_noise=act_noise)
    try:
        evaluation = fit_detector(cfg, output, force=force)
    except (DatasetError, ModelError, OutputExistsError) as exc:
        fail(str(exc))
    if not evaluation:
        click.echo(f"wrote {output} (trained weights only; make the inference form with TensorFlow: "
                   f"digitloc-train finish-detector {output})")
        return
    _say_evaluation(evaluation)
    click.echo(f"wrote {output}")


# The detection build a finished stage is evaluated on (finish-detector, snap-weights): declared once.
val_data_option = click.option(
    "--val-data", "data", type=click.Path(file_okay=False, exists=True), default=None,
    help="Detection build whose val.npz to read (default: the run's own, from its config.json).")


@main.command("finish-detector")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@val_data_option
def finish_detector_command(run: Path, data: str | None) -> None:
    """Make RUN's inference form (model.keras) and threshold (evaluation.json) from its trained
    weights: the last step of a stage trained under another Keras backend (JAX on a GPU machine)."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.train.detfit import finish_detector
    from digitloc.train.model import ModelError

    try:
        evaluation = finish_detector(run, data=data)
    except (DatasetError, ModelError, OSError, KeyError, ValueError) as exc:
        fail(f"{run}: {exc}" if str(run) not in str(exc) else str(exc))
    _say_evaluation(evaluation)
    click.echo(f"wrote {run / 'model.keras'}")


@main.command("snap-weights")
@click.argument("run", type=click.Path(file_okay=False, exists=True, path_type=Path))
@output_option(help="Run folder to write (the snapped model, its config, evaluation and RUN's record).", required=True)
@val_data_option
@force_option
def snap_weights_command(run: Path, output: Path, data: str | None, force: bool) -> None:
    """Write OUTPUT: detector run RUN with the weights the int8 export quantizes moved onto its int8 grid
    (per output channel, BatchNorm folded, -64..64 steps), and its threshold chosen again on the
    validation photos. OUTPUT's fp32 and int8 exports then hold the same convolution weights, so they
    differ by int8's activations (and its int32 biases' rounding) alone."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.train.detfit import snap_detector
    from digitloc.train.model import ModelError

    try:
        evaluation = snap_detector(run, output, data=data, force=force)
    except (DatasetError, ModelError, OutputExistsError, OSError, ValueError) as exc:
        fail(str(exc))
    _say_evaluation(evaluation)
    click.echo(f"wrote {output / 'model.keras'}")


@main.command("average-weights")
@click.argument("runs", metavar="RUN...", nargs=-1, required=True,
                type=click.Path(file_okay=False, exists=True, path_type=Path))
@output_option(help="Run folder to write (the averaged model, its config naming the runs, its evaluation).",
               required=True)
@val_data_option
@force_option
def average_weights_command(runs: tuple[Path, ...], output: Path, data: str | None, force: bool) -> None:
    """Write OUTPUT: the mean of the weights of detector runs RUN... (two or more of one design,
    fine-tuned from one ancestor: a uniform "model soup"), BatchNorm's moving statistics included,
    with its threshold chosen again on the validation photos. It costs what one of them costs to run."""
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.train.detfit import average_detectors
    from digitloc.train.model import ModelError

    try:
        evaluation = average_detectors(list(runs), output, data=data, force=force)
    except (DatasetError, ModelError, OutputExistsError, OSError, ValueError) as exc:
        fail(str(exc))
    _say_evaluation(evaluation)
    click.echo(f"wrote {output / 'model.keras'}")


def _say_evaluation(evaluation: dict) -> None:
    fig = evaluation["figures"]
    click.echo(f"validation photos: {fig['photos']}, threshold {evaluation['min_score']}: numbers "
               f"{fig['number_accuracy']:.1%}, digit recall {fig['digit_recall']:.1%}, "
               f"precision {fig['digit_precision']:.1%}")


@main.command()
@data_option
@output_option(help="Run folder to write (model, config, history, evaluation, plots).", required=True)
@size_option
@width_option(1.0)
@batchnorm_option(False)
@click.option("--weights", default=None, help="'imagenet' or a VGG19 notop weights file (width 1.0 only).")
@epochs_option(30)
@batch_size_option(64)
@lr_option
@click.option("--finetune-lr", "finetune_learning_rate", default=1e-4, show_default=True)
@click.option("--frozen-epochs", default=5, show_default=True, help="Phase 1 epochs when pretrained.")
@click.option("--box-loss", type=click.Choice(["mse", "giou", "mse+giou"]), default="mse+giou", show_default=True)
@click.option("--patience", default=6, show_default=True, help="Early stopping patience (epochs).")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
@max_minutes_option
@click.option("--strategy", type=click.Choice(["default", "mirrored"]), default="default", show_default=True)
@seed_option
@init_option
@click.option("--init-backbone-only", is_flag=True,
              help="Take only the conv blocks from --init (a model of another input size); the heads start new.")
@steps_per_epoch_option
@click.option("--head", type=click.Choice(HEADS), default="dense", show_default=True,
              help="dense: flatten + dense box and class heads (the reference's); spatial: centre, box and class "
                   "per stride-16 cell, reduced to one box and class inside the graph.")
@click.option("--expand", type=click.FloatRange(min=1.0, max=4.0), default=1.0, show_default=True,
              help="Largest zoom-out of the augmentation (1: none): teaches digits smaller than the data shows.")
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT from last.keras.")
@force_option
def fit(data: Path, output: Path, size: tuple[int, int], width: float, batchnorm: bool, weights: str | None,
        epochs: int, batch_size: int, learning_rate: float, finetune_learning_rate: float, frozen_epochs: int, box_loss: str,
        patience: int, no_augment: bool, max_minutes: float | None, strategy: str, seed: int,
        init: str | None, init_backbone_only: bool, steps_per_epoch: int | None, head: str, expand: float, resume: bool,
        force: bool) -> None:
    """Train a model on a built dataset; writes the run folder OUTPUT."""
    from dataclasses import asdict

    from digitloc.annotations.dataset.augment import AugmentConfig
    from digitloc.annotations.dataset.data import DatasetError
    from digitloc.train.fit import TrainConfig, train
    from digitloc.train.model import ModelConfig, ModelError
    from digitloc.train.record import RunError

    cfg = TrainConfig(data=str(data), model=ModelConfig(input_size=size, width=width, batchnorm=batchnorm, weights=weights,
                                                   head=head),
                      augmentation=asdict(AugmentConfig(expand=expand)),
                      epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                      finetune_learning_rate=finetune_learning_rate, frozen_epochs=frozen_epochs, box_loss=box_loss,
                      patience=patience, augment=not no_augment, seed=seed, max_minutes=max_minutes, strategy=strategy,
                      init=init, init_backbone_only=init_backbone_only, steps_per_epoch=steps_per_epoch)
    try:
        evaluation = train(cfg, output, resume=resume, force=force)
    except (DatasetError, ModelError, OutputExistsError, RunError, FileNotFoundError) as exc:
        fail(str(exc))
    _print_summary(evaluation)
    click.echo(f"wrote {output}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("data", type=click.Path(), required=False)
@kind_option()
@framing_option
@output_option(help="Write the figures as JSON here (and the framing chart beside it as PNG).", folder=False)
@force_option
def evaluate(model: str, data: str | None, kind: str, framing_dirs: tuple[str, ...], output: Path | None,
             force: bool) -> None:
    """Score a saved model on DATA (a split .npz, or a dataset folder: its val and test) and/or on
    the framing evaluation (--framing)."""
    from digitloc.annotations.charts import framing_chart
    from digitloc.annotations.dataset.data import DatasetError, framing_dataset, framing_photos, load_heldout
    from digitloc.annotations.metrics import evaluate_predictions, framing_figures
    from digitloc.runtime.fileio import check_writable
    from digitloc.train.model import ModelError, keras_predict, load_model

    if data is None and not framing_dirs:
        fail("give DATA and/or --framing SVHN_FOLDER")
    chart = output.with_name(output.stem + "-framing.png") if output else None
    result: dict = {}
    try:
        if output:
            check_writable(output, force)
            if framing_dirs:
                check_writable(chart, force)
        keras_model = load_model(model)
        if data is not None:
            split = load_heldout(data, kind)
            boxes, probs = keras_predict(keras_model, split.images)
            result = evaluate_predictions(split.boxes, split.labels, boxes, probs)
            _print_summary({f"{Path(data).name} ({kind})": result})
        if framing_dirs:
            size = tuple(int(d) for d in keras_model.inputs[0].shape[1:3])
            framed, shares = framing_dataset(framing_photos(list(framing_dirs)), size)
            boxes, probs = keras_predict(keras_model, framed.images)
            result["framing"] = framing_figures(shares, framed.boxes, framed.labels, boxes, probs)
            _print_framing(result["framing"])
    except (DatasetError, ModelError, OutputExistsError) as exc:
        fail(str(exc))
    if output:
        atomic_write_text(output, json.dumps(result, indent=1))
        if framing_dirs:
            framing_chart({Path(model).name: result["framing"]}, chart)


def _print_framing(figures: dict) -> None:
    click.echo(f"framing evaluation: {figures['samples']} re-framed photos, class accuracy "
               f"{figures['class_accuracy']:.4f}, mean IoU {figures['mean_iou']:.4f}")
    click.echo("  share  accuracy  mean IoU  IoU>=0.5  pred/true height  constant-box IoU")
    for r in figures["per_share"]:
        click.echo(f"  {r['share']:.2f}   {r['class_accuracy']:.4f}    {r['mean_iou']:.4f}    {r['iou_hit_rate']:.4f}"
                   f"    {r['height_ratio']:.3f}            {r['constant_box_iou']:.4f}")


def _print_summary(evaluation: dict) -> None:
    for name, fig in evaluation.items():
        if not isinstance(fig, dict) or "class_accuracy" not in fig:
            continue
        base = fig.get("constant_box_baseline")
        extra = f" (constant box: {base['mean_iou']:.3f})" if base else ""
        click.echo(f"{name}: {fig['samples']} photos, class accuracy {fig['class_accuracy']:.4f}, "
                   f"mean IoU {fig['mean_iou']:.4f}{extra}, IoU>=0.5 {fig['iou_hit_rate']:.4f}, "
                   f"both right {fig['both_right']:.4f}")
        if fig.get("accuracy_box_found") is not None and fig.get("accuracy_box_missed") is not None:
            click.echo(f"  class accuracy where the box was found {fig['accuracy_box_found']:.4f}, "
                       f"where it was missed {fig['accuracy_box_missed']:.4f}; predicted/true box width "
                       f"{fig['box_size_ratio']['width']:.3f}, height {fig['box_size_ratio']['height']:.3f}")


@main.command("keep-run")
@click.argument("source", metavar="FROM", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("to", metavar="TO", type=click.Path(file_okay=False, path_type=Path))
@click.option("--keep-weights", "weights", is_flag=True, help="Also keep model.keras, without optimizer state.")
def keep_run(source: Path, to: Path, weights: bool) -> None:
    """Copy run FROM's record into TO: config, history, evaluation, plots and export parity reports."""
    from digitloc.train.model import ModelError
    from digitloc.train.record import RunError, RunRecord

    try:
        written = RunRecord(source).keep(to, weights=weights)
    except (RunError, ModelError, OSError) as exc:
        fail(str(exc))
    click.echo(f"kept {len(written)} files of {source} in {to}")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE", help="Override a variable of the recipe.")
@click.option("--only", multiple=True, metavar="PATTERN", help="Run only the stages whose name matches (shell-style).")
@click.option("--from", "start", default=None, metavar="STAGE", help="Start at this stage (after a stop).")
@click.option("--dry-run", is_flag=True, help="Print the stages' command lines and run nothing.")
def recipe(recipe: Path, assignments: tuple[str, ...], only: tuple[str, ...], start: str | None, dry_run: bool) -> None:
    """Run a training RECIPE (a TOML file of stages, e.g. recipes/default.toml) stage by stage,
    each as its own process; stops at the first stage that fails."""
    import shlex
    import subprocess
    import time

    from digitloc.train.recipe import RecipeError, executable, load_recipe, select

    try:
        overrides = dict(a.split("=", 1) for a in assignments)
    except ValueError:
        fail(f"--set takes NAME=VALUE, got {', '.join(a for a in assignments if '=' not in a)}")
    try:
        stages = select(load_recipe(recipe, overrides), only, start)
        programs = {s.name: executable(s.argv[0]) for s in stages} if not dry_run else {}
    except RecipeError as exc:
        fail(str(exc))
    for i, stage in enumerate(stages, start=1):
        click.echo(f"[{i}/{len(stages)}] {stage.name}: {shlex.join(stage.argv)}", err=True)
        if dry_run:
            continue
        started = time.time()
        code = subprocess.run([programs[stage.name], *stage.argv[1:]], check=False).returncode
        if code != 0:
            fail(f"{recipe}: stage {stage.name} failed (exit {code}); rerun from it with --from {stage.name}", code=code)
        click.echo(f"[{i}/{len(stages)}] {stage.name}: done in {(time.time() - started) / 60:.1f} min", err=True)
