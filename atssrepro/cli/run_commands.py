"""The commands of one run: ``train``, ``eval``, ``import official``, ``predict``, ``config``,
``data synth|subset`` and ``analyze assignment``."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import typer

from atssrepro.cli.common import (
    ConfigOption,
    DataOption,
    JsonOption,
    PresetOption,
    SetOption,
    analyze_app,
    app,
    check_torch_pair,
    console,
    count_option,
    data_app,
    import_app,
    print_metrics,
    usable_device,
)
from atssrepro.errors import UserError


@app.command()
def train(
    config: str | None = ConfigOption,
    preset: str = PresetOption,
    set_: list[str] = SetOption,
    data: str | None = DataOption,
    out: Path | None = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Run folder (default: results/RUN_ID, RUN_ID the config's id)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Train one detector, evaluate it on the validation split, and print its COCO metrics.

    A run folder that already holds a checkpoint is resumed; a finished one is not retrained.
    """
    check_torch_pair()
    from atssrepro import config as cfg
    from atssrepro import distributed
    from atssrepro.engine.run import execute
    from atssrepro.engine.run_dir import RunDir

    chosen = cfg.preset_named(preset)
    resolved = cfg.build_config(config, chosen, set_, data)
    run = RunDir(out if out is not None else Path("results") / cfg.config_id(resolved))
    metrics = execute(resolved, run, chosen.name, console)
    distributed.destroy()
    if metrics:  # only the main process of a DDP run has them
        console.print(f"run folder: {run.path}")
        print_metrics(metrics, as_json)


@app.command("eval")
def eval_(
    target: Path | None = typer.Argument(None, metavar="RUN", help="A run folder or a checkpoint file."),
    data: str | None = DataOption,
    detections: Path | None = typer.Option(
        None, metavar="FILE", help="Score this COCO results file instead of a model."
    ),
    ann: Path | None = typer.Option(None, metavar="FILE", help="Annotation file for --detections."),
    backend: str | None = typer.Option(None, metavar="NAME", help="pycocotools (default) or faster-coco-eval."),
    tta: bool = typer.Option(False, "--tta", help="Multi-scale + flip testing with box voting (Table 8)."),
    as_json: bool = JsonOption,
) -> None:
    """Evaluate a trained run or checkpoint, or score any COCO results file with --detections.

    Evaluating a finished run folder on its own data writes detections.json and metrics.json into it
    (detections_tta.json and metrics_tta.json with --tta); other data, or an unfinished run, writes
    beside them under a name that says which (`metrics.DATA-HASH.json`, `metrics.iterN.json`).
    """
    if detections is not None:
        from atssrepro.engine.coco_eval import evaluate_detections, load_detections

        if ann is None or target is not None:
            raise UserError("--detections needs --ann ANNOTATIONS.json and no run folder or checkpoint")
        metrics = evaluate_detections(ann, load_detections(detections), backend=backend or "pycocotools")
        print_metrics(metrics.to_json(), as_json)
        return
    if target is None:
        raise UserError("give a run folder or a checkpoint file, or --detections FILE --ann FILE")

    check_torch_pair()
    from atssrepro import distributed
    from atssrepro.engine.run import evaluate_run

    metrics = evaluate_run(target, console, data, backend, tta)
    distributed.destroy()
    if metrics:
        print_metrics(metrics, as_json)


@import_app.command("official")
def import_official(
    checkpoint: Path = typer.Argument(
        ..., metavar="CHECKPOINT", help="An official ATSS checkpoint (model_final.pth) or state dict."
    ),
    config: str = typer.Option(
        ...,
        "--config",
        "-c",
        metavar="NAME|FILE",
        help="The zoo model's built-in config (atss_dcnv2_r101_fpn_2x, ...) or a TOML file.",
    ),
    set_: list[str] = SetOption,
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="The run folder to create."),
) -> None:
    """Import a checkpoint of the official ATSS code (sfzhang15/ATSS) as a run folder for `atssrepro eval`."""
    check_torch_pair()
    from atssrepro import config as cfg
    from atssrepro.engine.official_import import import_official_checkpoint

    run = import_official_checkpoint(checkpoint, cfg.build_config(config, cfg.PAPER, set_), out)
    console.print(f"run folder: {run}; evaluate it with: atssrepro eval {run} --data DATASET [--tta]")


@app.command()
def predict(
    target: Path = typer.Argument(..., metavar="RUN", help="A run folder or a checkpoint file."),
    images: Path = typer.Option(..., metavar="DIR", help="Folder of the images, e.g. test2017/."),
    info: Path = typer.Option(
        ..., metavar="FILE", help="Image list in COCO format, e.g. image_info_test-dev2017.json."
    ),
    out: Path = typer.Option(Path("results/test-dev"), "--out", "-o", metavar="DIR", help="Folder for the zip."),
    split: str = typer.Option(
        "test-dev2017", metavar="NAME", help="Split name in the file names the COCO server expects."
    ),
    method: str = typer.Option("atssrepro", metavar="NAME", help="Method name in the file names."),
    tta: bool = typer.Option(False, "--tta", help="Multi-scale + flip testing with box voting (Table 8)."),
) -> None:
    """Detect on an images-only split (COCO test-dev) and write the zip for the evaluation server."""
    check_torch_pair()
    from atssrepro import distributed
    from atssrepro.data.coco import CocoDetection
    from atssrepro.engine.run import detect, model_from_checkpoint
    from atssrepro.engine.run_dir import RunDir
    from atssrepro.engine.testdev import export_results_zip

    device = distributed.init_from_env()
    model, config = model_from_checkpoint(RunDir(target).checkpoint_path if target.is_dir() else target, device)
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, tta=tta))
    dataset = CocoDetection(info, images, train=False, max_size=config.data.max_size)
    detections = detect(model, dataset, config, device, console)
    if distributed.is_main():
        path = export_results_zip(detections, out, split=split, method=method)
        console.print(f"wrote {len(detections)} detections of {len(dataset)} images to {path}")
    distributed.destroy()


@app.command("config")
def show_config(
    config: str | None = ConfigOption,
    preset: str = PresetOption,
    set_: list[str] = SetOption,
    data: str | None = DataOption,
) -> None:
    """Print the fully resolved config as TOML, headed by its id: save it and pass it back with --config FILE."""
    from atssrepro import config as cfg

    resolved = cfg.build_config(config, cfg.preset_named(preset), set_, data)
    # Plain print: a console would wrap long lines, and wrapped TOML is no longer the config.
    print(f"# id: {cfg.config_id(resolved)}")
    print(cfg.to_toml(resolved), end="")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Folder to write the dataset to."),
    train_images: int = typer.Option(64, metavar="N", help="Training images."),
    val_images: int = typer.Option(32, metavar="N", help="Validation images."),
    seed: int = typer.Option(0, metavar="N", help="Random seed; the same seed gives the same bytes."),
) -> None:
    """Generate the embedded default: a small COCO-format dataset of shapes, no download needed."""
    from atssrepro.data.synth import make_synthetic_coco

    make_synthetic_coco(out, train_images=train_images, val_images=val_images, seed=seed)
    console.print(f"wrote {train_images} train and {val_images} val images to {out}")


@data_app.command("subset")
def data_subset(
    coco: Path = typer.Option(..., metavar="DIR", help="Root of a full COCO (annotations/, train2017/, val2017/)."),
    split: str = typer.Option("val2017", metavar="NAME", help="train2017 or val2017."),
    images: int = count_option(..., "--images", low=1, high=1_000_000, help="How many images to take."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Folder for the subset."),
    seed: int = typer.Option(0, metavar="N", help="Random seed for the choice of images."),
) -> None:
    """Carve a small real subset out of a full COCO."""
    from atssrepro.data.subset import make_coco_subset

    ann = make_coco_subset(coco, split, images, out, seed=seed)
    console.print(f"wrote {images} images of {split} to {out} ({ann})")


@analyze_app.command("assignment")
def analyze_assignment(
    ann: Path = typer.Option(
        ..., metavar="FILE", help="A COCO annotation file; without --checkpoint no image is read (sizes come from it)."
    ),
    strategy: list[str] | None = typer.Option(
        None,
        "--strategy",
        metavar="NAME",
        help="Assignment strategy (repeatable). Default: atss, iou, ssc, center_sampling; with --checkpoint "
        "all nine (tal, simota, ota, dsl and paa need it).",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        metavar="RUN_OR_FILE",
        help="A trained run folder or checkpoint file: its model predicts on the images (read from --images) "
        "and every strategy assigns from those same predictions; the model and assign settings are its own.",
    ),
    images: Path | None = typer.Option(
        None,
        "--images",
        metavar="DIR",
        help="With --checkpoint: the images of --ann (default: ROOT/val2017 for ROOT/annotations/"
        "instances_val2017.json).",
    ),
    config: str | None = ConfigOption,
    set_: list[str] = SetOption,
    max_images: int | None = count_option(
        None, "--max-images", low=1, high=1_000_000, help="Analyse only the first N images with a box."
    ),
    out: Path = typer.Option(
        Path("results/analysis"), "--out", "-o", metavar="DIR", help="Folder for the CSVs and the plot."
    ),
    device: str = typer.Option("cpu", metavar="DEVICE", help="cpu or cuda."),
) -> None:
    """Positives per GT of each assigner, by object size: the paper's 0.2 x k x L claim, checked.

    Resizes every image as training does (model anchors and the assignment settings come from the
    config), runs each strategy, prints a markdown summary and writes `summary.csv`, `per_gt.csv`
    and `positives.png` to --out. With --checkpoint the model, its anchors and assign settings come from
    the checkpoint (--set still applies on top), the images are read and every strategy, static or
    prediction-aware, assigns on the same model state and images.
    """
    check_torch_pair()
    from atssrepro import config as cfg
    from atssrepro.analysis.assignment import (
        STATIC_STRATEGIES,
        STRATEGIES,
        assignment_statistics,
        checkpoint_assignment_statistics,
        plot_positives,
        positives_reference,
        render_summary,
        summarize,
    )
    from atssrepro.engine.progress import progress
    from atssrepro.fileio import write_text

    with contextlib.ExitStack() as bars:
        shown = []  # the progress bar, opened once the number of images is known

        def report(done: int, total: int) -> None:
            if not shown:
                shown.append(bars.enter_context(progress(console, "assigning images", total, max(1, total // 20))))
            shown[0](done)

        if checkpoint is None:
            if images is not None:
                raise UserError("--images is read with --checkpoint only: without a model no image is read")
            resolved = cfg.build_config(config, cfg.PAPER, set_)
            d = resolved.data
            stats = assignment_statistics(
                ann, strategy or STATIC_STRATEGIES, resolved.model, d.train_short_side[1], d.max_size,
                d.size_divisible, max_images, device=usable_device(device), report=report,
            )  # fmt: skip
        else:
            if config is not None:
                raise UserError("--config is not read with --checkpoint: the model and its config are the checkpoint's")
            model, resolved = _analysed_model(checkpoint, set_, usable_device(device))
            d = resolved.data
            stats = checkpoint_assignment_statistics(
                model, ann, images or _images_of(ann), strategy or STRATEGIES, d.train_short_side[1], d.max_size,
                d.size_divisible, max_images, report=report,
            )  # fmt: skip
    summary = summarize(stats, resolved.model)
    write_text(out / "per_gt.csv", stats.to_csv(index=False))
    write_text(out / "summary.csv", summary.to_csv(index=False))
    plot_positives(stats, out / "positives.png", positives_reference(resolved.model))
    print(render_summary(summary), end="")
    console.print(f"wrote {out / 'summary.csv'}, {out / 'per_gt.csv'} and {out / 'positives.png'}")


def _analysed_model(target: Path, set_: list[str], device: str) -> tuple:
    """The model of a run folder's or a checkpoint file's checkpoint and its config, with ``--set`` (of
    ``model.assign.*`` and ``data.*`` only: the trained network stays as it is) applied to both."""
    import torch

    from atssrepro import config as cfg
    from atssrepro.config.layers import apply, parse_override
    from atssrepro.engine.run import model_from_checkpoint
    from atssrepro.engine.run_dir import RunDir

    path = RunDir(target).checkpoint_path if target.is_dir() else target
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; pass a trained run folder or a checkpoint file")
    fixed = [a for a in set_ if not a.strip().startswith(("model.assign.", "data."))]
    if fixed:
        raise UserError(f"--set {fixed[0]}: with --checkpoint only model.assign.* and data.* can be set")
    model, config = model_from_checkpoint(path, torch.device(device))
    for assignment in set_:
        config = apply(config, parse_override(assignment), f"--set {assignment}")
    cfg.check_consistency(config)
    model.config = dataclasses.replace(model.config, assign=config.model.assign)
    return model, config


def _images_of(ann: Path) -> Path:
    """ROOT/val2017 for ROOT/annotations/instances_val2017.json."""
    return ann.parent.parent / ann.stem.removeprefix("instances_")
