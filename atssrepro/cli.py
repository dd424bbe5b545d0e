"""The ``atssrepro`` command line: thin wrappers that parse, call one function, and print."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections import Counter
from enum import Enum
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from atssrepro.errors import UserError, one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproduce the tables of the ATSS paper (CVPR 2020): train, evaluate, report.",
)
data_app = typer.Typer(no_args_is_help=True, help="Make datasets: the embedded synthetic one, or a real COCO subset.")
app.add_typer(data_app, name="data")
analyze_app = typer.Typer(no_args_is_help=True, help="Analyses that need no GPU and no images.")
app.add_typer(analyze_app, name="analyze")
import_app = typer.Typer(no_args_is_help=True, help="Turn trained models from elsewhere into run folders.")
app.add_typer(import_app, name="import")

# Human-readable progress goes to stderr, so that --json leaves stdout to the JSON alone.
console = Console(stderr=True)
# Piped or redirected output is not bound to a terminal's width: keep table lines whole.
stdout = Console(width=None if sys.stdout.isatty() else 160)

ConfigOption = typer.Option(None, "--config", "-c", help="A built-in config name or a TOML file.")
PresetOption = typer.Option("paper", "--preset", "-p", help="paper (the official recipe) or smoke (CPU, ~1 min).")
SetOption = typer.Option([], "--set", "-s", help="Override a field: --set model.assign.topk=7 (repeatable).")
DataOption = typer.Option(None, "--data", "-d", help="Dataset root (annotations/, train2017/, val2017/).")
# --preset, --seeds and --data make a row's run id: every command that names runs takes all three.
SeedsOption = typer.Option(1, help="Seeds 0..N-1 per row.")
JsonOption = typer.Option(False, "--json", help="Print the final metrics as one JSON object on stdout.")


def print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics))
        return
    table = Table(
        title=f"COCO bbox AP/AR % ({metrics['backend']}, {metrics['num_images']} images)", box=box.SIMPLE_HEAD
    )
    for name in metrics["stats"]:
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    table.add_row(*(f"{100 * v:.1f}" if v >= 0 else "-" for v in metrics["stats"].values()))
    stdout.print(table)


@app.command()
def train(
    config: str | None = ConfigOption,
    preset: str = PresetOption,
    set_: list[str] = SetOption,
    data: str | None = DataOption,
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default results/<config id>)."),
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

    resolved = cfg.build_config(config, preset, set_, data)
    run = RunDir(out if out is not None else Path("results") / cfg.config_id(resolved))
    metrics = execute(resolved, run, preset, console)
    distributed.destroy()
    if metrics:  # only the main process of a DDP run has them
        console.print(f"run folder: {run.path}")
        print_metrics(metrics, as_json)


@app.command("eval")
def eval_(
    target: Path | None = typer.Argument(None, help="A run folder or a checkpoint file."),
    data: str | None = DataOption,
    detections: Path | None = typer.Option(None, help="Score this COCO results file instead of a model."),
    ann: Path | None = typer.Option(None, help="Annotation file for --detections."),
    backend: str | None = typer.Option(None, help="pycocotools (default) or faster-coco-eval."),
    tta: bool = typer.Option(False, "--tta", help="Multi-scale + flip testing with box voting (Table 8)."),
    as_json: bool = JsonOption,
) -> None:
    """Evaluate a trained run or checkpoint, or score any COCO results file with --detections.

    Evaluating a finished run folder on its own data writes detections.json and metrics.json into it
    (detections_tta.json and metrics_tta.json with --tta); other data, or an unfinished run, writes
    beside them under a name that says which (metrics.DATA-HASH.json, metrics.iterN.json).
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
    checkpoint: Path = typer.Argument(..., help="An official ATSS checkpoint (model_final.pth) or state dict."),
    config: str = typer.Option(
        ..., "--config", "-c", help="The zoo model's built-in config (atss_dcnv2_r101_fpn_2x, ...) or a TOML file."
    ),
    set_: list[str] = SetOption,
    out: Path = typer.Option(..., "--out", "-o", help="The run folder to create."),
) -> None:
    """Import a checkpoint of the official ATSS code (sfzhang15/ATSS) as a run folder for ``atssrepro eval``."""
    check_torch_pair()
    from atssrepro import config as cfg
    from atssrepro.engine.official_import import import_official_checkpoint

    run = import_official_checkpoint(checkpoint, cfg.build_config(config, "paper", set_), out)
    console.print(f"run folder: {run}; evaluate it with: atssrepro eval {run} --data DATASET [--tta]")


@app.command()
def predict(
    target: Path = typer.Argument(..., help="A run folder or a checkpoint file."),
    images: Path = typer.Option(..., help="Folder of the images, e.g. test2017/."),
    info: Path = typer.Option(..., help="Image list in COCO format, e.g. image_info_test-dev2017.json."),
    out: Path = typer.Option(Path("results/test-dev"), "--out", "-o", help="Folder for the zip."),
    split: str = typer.Option("test-dev2017", help="Split name in the file names the COCO server expects."),
    method: str = typer.Option("atssrepro", help="Method name in the file names."),
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

    resolved = cfg.build_config(config, preset, set_, data)
    # Plain print: a console would wrap long lines, and wrapped TOML is no longer the config.
    print(f"# id: {cfg.config_id(resolved)}")
    print(cfg.to_toml(resolved), end="")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the dataset to."),
    train_images: int = typer.Option(64, help="Training images."),
    val_images: int = typer.Option(32, help="Validation images."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same bytes."),
) -> None:
    """Generate the embedded default: a small COCO-format dataset of shapes, no download needed."""
    from atssrepro.data.synth import make_synthetic_coco

    make_synthetic_coco(out, train_images=train_images, val_images=val_images, seed=seed)
    console.print(f"wrote {train_images} train and {val_images} val images to {out}")


@data_app.command("subset")
def data_subset(
    coco: Path = typer.Option(..., help="Root of a full COCO (annotations/, train2017/, val2017/)."),
    split: str = typer.Option("val2017", help="train2017 or val2017."),
    images: int = typer.Option(..., help="How many images to take."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the subset."),
    seed: int = typer.Option(0, help="Random seed for the choice of images."),
) -> None:
    """Carve a small real subset out of a full COCO."""
    from atssrepro.data.subset import make_coco_subset

    ann = make_coco_subset(coco, split, images, out, seed=seed)
    console.print(f"wrote {images} images of {split} to {out} ({ann})")


TablesArgument = typer.Argument(None, help="Table names (table1..table8); all tables when none are given.")
ResultsOption = typer.Option(Path("results"), "--results", help="The results store: one folder per run.")


def make_table(*columns: str, title: str | None = None) -> Table:
    """A plain table whose cells wrap instead of being cut, whatever the terminal width."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def load_specs(tables: list[str] | None) -> list:
    from atssrepro.harness.specs import available_tables, load_table

    return [load_table(name) for name in (tables or available_tables())]


class ExecutorName(str, Enum):
    local = "local"
    slurm = "slurm"


@app.command()
def run(
    tables: list[str] = typer.Argument(..., help="Table names, e.g. table1 table3."),
    preset: str = PresetOption,
    rows: list[str] = typer.Option([], "--rows", help="Only these row ids (repeatable)."),
    seeds: int = SeedsOption,
    data: str | None = DataOption,
    results: Path = ResultsOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs, their config and cost; train nothing."),
    force: bool = typer.Option(False, "--force", help="Train finished runs again from scratch."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: one JSON object per run."),
    gpu_type: str | None = typer.Option(
        None, help="With --dry-run: the device to give hours for, as nvidia-smi names it (default: this machine's)."
    ),
    executor: ExecutorName = typer.Option(
        ExecutorName.local, "--executor", "-e", help="local: this machine's GPUs (or CPU); slurm: a Slurm cluster."
    ),
    gpus: str | None = typer.Option(
        None,
        help="local: GPU ids, e.g. 0,1,2,3 (default: every visible GPU, else the CPU; cpu0,cpu1: two CPU slots).",
    ),
    gpus_per_run: int = typer.Option(1, help="local: GPUs per run; with more than one a run trains with DDP."),
    profile: str | None = typer.Option(
        None, help="slurm: a profile of slurm/ (local, example_cluster, yours) or a TOML file."
    ),
    wait: bool = typer.Option(False, "--wait", help="slurm: stay until every job has ended, then summarize."),
    zoo_dir: Path | None = typer.Option(
        None, "--zoo-dir", help="The folder of the official checkpoints that evaluation-only rows (zoo) import."
    ),
) -> None:
    """Train and evaluate every run the tables need; runs shared by several rows train once.

    Evaluation-only rows (``atssrepro run zoo --zoo-dir DIR``) import an official checkpoint of
    DIR and evaluate it; a missing file fails that row only.

    Finished runs are skipped, interrupted ones resume. Locally, a queue packs the runs onto the
    GPUs, --gpus-per-run each, and starts the next run whenever one ends; on Slurm, the pending
    runs go to the cluster as one job array and the command returns (unless --wait). A failing
    run is recorded and the others go on; the exit code is 1 when any run did not finish.
    """
    from atssrepro.harness.plan import plan
    from atssrepro.harness.store import Store

    runs = plan(load_specs(tables), preset, rows, seeds, data, zoo_dir)
    if dry_run:
        from atssrepro.harness.throughput import local_device

        print_plan(runs, as_json, gpu_type or local_device())
        return
    if gpu_type is not None:
        raise UserError("--gpu-type is an option of --dry-run: it names the device to give hours for")
    if zoo_dir is None and any(run.checkpoint for run in runs):
        raise UserError("evaluation-only rows import official checkpoints: give --zoo-dir DIR, the folder holding them")
    check_torch_pair()
    store = Store(results)
    if not force:
        store.refuse_corrupt([r.run_id for r in runs])
    if executor is ExecutorName.local:
        from atssrepro.harness.executors import QueueExecutor, local_devices

        if profile is not None or wait:
            raise UserError("--profile and --wait are options of --executor slurm")
        queue = QueueExecutor(console, local_devices(gpus), gpus_per_run)
        try:
            outcomes = queue.execute(runs, store, force)
        except KeyboardInterrupt:
            console.print("interrupted: the runs that were training saved their last iteration; run again to resume")
            raise typer.Exit(130) from None
    else:
        from atssrepro.harness.slurm import SlurmExecutor, load_profile

        if gpus is not None or gpus_per_run != 1:
            raise UserError("--gpus and --gpus-per-run are options of --executor local; on Slurm the profile sets them")
        if profile is None:
            raise UserError("--executor slurm needs --profile NAME (a file of slurm/) or --profile FILE.toml")
        slurm = SlurmExecutor(console, load_profile(profile))
        outcomes = slurm.execute(runs, store, force)
        if not wait:
            counts = Counter(o.state for o in outcomes)
            console.print(", ".join(f"{n} {state}" for state, n in counts.items()), highlight=False)
            console.print("follow them with `atssrepro status`, collect them with `atssrepro report`")
            return
        try:
            outcomes = slurm.wait(outcomes, store)
        except KeyboardInterrupt:
            console.print("stopped waiting; the jobs go on (`atssrepro status`, `atssrepro cancel`)")
            raise typer.Exit(130) from None
    failed = [o for o in outcomes if o.state not in ("done", "skipped")]
    console.print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished")
    if failed:
        for outcome in failed:
            console.print(f"  {outcome.run_id}: {outcome.state}: {outcome.message}", highlight=False)
        raise typer.Exit(1)


def print_plan(runs: list, as_json: bool, device: str) -> None:
    from atssrepro.harness.throughput import cost_line, device_hours

    if as_json:
        for run in runs:
            line = {
                "run_id": run.run_id,
                "rows": [str(r) for r in run.rows],
                "preset": run.preset,
                "seed": run.seed,
                "tta": run.tta,
                "config_diff": run.diff,
                "cost_images": run.cost,
                "checkpoint": str(run.checkpoint) if run.checkpoint else None,
                "device": device,
                "device_hours": device_hours(run.cost, device) if run.preset == "paper" else None,
            }
            print(json.dumps(line))
        return
    from atssrepro.harness.plan import assignments

    table = make_table("run", "rows", "config (differences from the table base)", "images", title=f"{len(runs)} runs")
    for run in runs:
        diff = "\n".join(assignments(run.diff)) or "(base)"
        cost = f"{run.cost:,}" if run.checkpoint is None else f"evaluation only: {run.checkpoint}"
        table.add_row(run.run_id, "\n".join(map(str, run.rows)), diff, cost)
    stdout.print(table)
    total = sum(r.cost for r in runs)
    stdout.print(f"total: {total:,} training images", highlight=False)
    stdout.print(cost_line(total, device, runs[0].preset if runs else "paper"), highlight=False)


@app.command("list")
def list_tables(
    results: Path = ResultsOption,
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
) -> None:
    """The tables, their rows and how many of their runs are done."""
    from atssrepro.harness.plan import plan
    from atssrepro.harness.store import Store

    store = Store(results)
    table = make_table("table", "caption", "rows", "runs", f"done ({preset})")
    for spec in load_specs(None):
        runs = plan([spec], preset, (), seeds, data)
        done = sum(store.state(r.run_id) == "done" for r in runs)
        table.add_row(spec.name, spec.caption, str(len(spec.rows)), str(len(runs)), str(done))
    stdout.print(table)


@app.command()
def show(
    table_name: str = typer.Argument(..., metavar="TABLE"),
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
) -> None:
    """A table's rows: their config fields (as --set takes them), run ids and published numbers."""
    from atssrepro.harness.plan import assignments, resolve_row, row_run_id, row_seeds

    (spec,) = load_specs([table_name])
    stdout.print(f"[bold]{spec.title}[/]: {spec.caption}")
    if spec.base:
        stdout.print("base: " + ", ".join(assignments(spec.base)), highlight=False, markup=False, soft_wrap=True)
    table = make_table("row", "label", "config", "run", *spec.metrics)
    for row in spec.rows:
        run_ids = [] if row.reference_only else [
            row_run_id(row, resolve_row(spec, row, preset, seed, data)) for seed in row_seeds(row, seeds)
        ]  # fmt: skip
        published = [f"{row.published[m]:.1f}" if m in row.published else "-" for m in spec.metrics]
        lines = assignments(row.config) + (["+ tta"] if row.tta else [])
        config = "\n".join(lines + ([f"evaluates {row.checkpoint}"] if row.evaluation_only else []))
        config = "(reference)" if row.reference_only else config or "(base)"
        table.add_row(row.id, row.label, config, "\n".join(run_ids), *published)
    stdout.print(table)


@app.command()
def status(
    tables: list[str] | None = TablesArgument,
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
    results: Path = ResultsOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per run."),
) -> None:
    """Each run's state, progress and last loss; for runs on Slurm, also their job, its state and node.

    States: not run, pending, running, done, failed, diverged, interrupted (resumes on the next
    run); on Slurm also requeued (after a preemption or a time limit) and cancelled.
    """
    from atssrepro.harness.plan import plan
    from atssrepro.harness.status import run_statuses
    from atssrepro.harness.store import Store

    statuses = run_statuses(plan(load_specs(tables), preset, (), seeds, data), Store(results))
    if as_json:
        for status in statuses:
            print(json.dumps(dataclasses.asdict(status)))
        return
    on_slurm = any(s.slurm_job_id for s in statuses)
    slurm_columns = ("Slurm job", "node (or why it waits)", "requeues") if on_slurm else ()
    table = make_table("run", "rows", "state", "iteration", "loss", *slurm_columns, "message")
    for s in statuses:
        iteration = f"{s.iteration}/{s.iterations}" if s.iteration is not None else "-"
        loss = f"{s.loss:.3f}" if s.loss is not None else "-"
        job = f"{s.slurm_job_id} {s.slurm_state.lower()}".strip()
        where = s.node or (f"({s.reason})" if s.reason else "")
        slurm_cells = (job, where, str(s.requeues) if s.slurm_job_id else "") if on_slurm else ()
        table.add_row(s.run_id, ", ".join(s.rows), s.state, iteration, loss, *slurm_cells, s.message[:60])
    stdout.print(table)


@app.command()
def cancel(
    targets: list[str] = typer.Argument(..., metavar="TABLE|RUN...", help="Table names or run ids."),
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
    results: Path = ResultsOption,
) -> None:
    """Cancel the Slurm jobs of every run of the tables, or of the runs given by id.

    The runs keep their checkpoints: `atssrepro run` submits them again and they resume.
    """
    from atssrepro.harness.plan import plan
    from atssrepro.harness.slurm import cancel_jobs, live_jobs
    from atssrepro.harness.specs import available_specs, load_table
    from atssrepro.harness.store import Store

    store = Store(results)
    run_ids: list[str] = []
    for target in targets:
        if target in available_specs():
            run_ids += [run.run_id for run in plan([load_table(target)], preset, (), seeds, data)]
        elif re.fullmatch(r"[0-9a-f]{12}", target) and store.run(target).state_path.is_file():
            run_ids.append(target)
        else:
            raise UserError(
                f"{target!r} is neither a table ({', '.join(available_specs())}) nor the id of a run in {results}/"
            )
    jobs = {run_id: store.info(run_id).get("slurm_job_id") for run_id in dict.fromkeys(run_ids)}
    live = live_jobs(jobs.values())
    cancel_jobs(live)
    for run_id, job in jobs.items():
        verdict = f"cancelled job {job} ({live[job].lower()})" if job in live else "no job in the queue"
        console.print(f"{run_id}: {verdict}", highlight=False)
    console.print(f"cancelled {len(live)} job(s)")


@app.command()
def report(
    tables: list[str] | None = TablesArgument,
    fmt: str = typer.Option("terminal", "--format", "-f", help="terminal, markdown, csv, latex, html or json."),
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
    results: Path = ResultsOption,
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the report to this file."),
    plots: Path | None = typer.Option(None, "--plots", help="Write PNG plots of Tables 4-6 to this folder."),
) -> None:
    """The reproduced numbers next to the published ones, laid out as the paper's tables."""
    from atssrepro.fileio import write_text
    from atssrepro.harness.collect import collect
    from atssrepro.harness.report import plot_sweeps, render
    from atssrepro.harness.store import Store

    specs = load_specs(tables)
    frame = collect(specs, preset, seeds, Store(results), data)
    text = render(specs, frame, fmt)
    if out is not None:
        write_text(out, text)
        console.print(f"wrote {out}")
    elif fmt == "terminal":
        stdout.print(text, highlight=False, markup=False, soft_wrap=True)
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    if plots is not None:
        for path in plot_sweeps(specs, frame, plots):
            console.print(f"wrote {path}")


@analyze_app.command("assignment")
def analyze_assignment(
    ann: Path = typer.Option(..., help="A COCO annotation file; image sizes come from it, no image is read."),
    strategy: list[str] = typer.Option(
        ["atss", "iou", "ssc", "center_sampling"], "--strategy", help="Assignment strategy (repeatable)."
    ),
    config: str | None = ConfigOption,
    set_: list[str] = SetOption,
    max_images: int | None = typer.Option(None, help="Analyse only the first N images with a box."),
    out: Path = typer.Option(Path("results/analysis"), "--out", "-o", help="Folder for the CSVs and the plot."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
) -> None:
    """Positives per GT of each assigner, by object size: the paper's 0.2 x k x L claim, checked.

    Resizes every image as training does (model anchors and the assignment settings come from the
    config), runs each strategy, prints a markdown summary and writes ``summary.csv``,
    ``per_gt.csv`` and ``positives.png`` to ``--out``.
    """
    check_torch_pair()
    from atssrepro import config as cfg
    from atssrepro.analysis.assignment import (
        assignment_statistics,
        plot_positives,
        positives_reference,
        render_summary,
        summarize,
    )
    from atssrepro.fileio import write_text

    resolved = cfg.build_config(config, "paper", set_)
    d = resolved.data
    stats = assignment_statistics(
        ann, strategy, resolved.model, d.train_short_side[1], d.max_size, d.size_divisible, max_images, device=device
    )
    summary = summarize(stats, resolved.model)
    write_text(out / "per_gt.csv", stats.to_csv(index=False))
    write_text(out / "summary.csv", summary.to_csv(index=False))
    plot_positives(stats, out / "positives.png", positives_reference(resolved.model))
    print(render_summary(summary), end="")
    console.print(f"wrote {out / 'summary.csv'}, {out / 'per_gt.csv'} and {out / 'positives.png'}")


def check_torch_pair() -> None:
    """Fail in one line when torchvision was built for another torch than the installed one.

    Called by the commands that need torch only: the others (--help, list, show, status, report,
    run --dry-run) never import it, so that they start in a fraction of a second."""
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError, OSError) as e:
        import torch

        raise UserError(
            f"torchvision does not work with the installed torch {torch.__version__} "
            f"({str(e).splitlines()[0]}); install a matching pair: pip install -c constraints.txt torch torchvision"
        ) from None


def main() -> None:
    """Entry point: Typer handles usage errors (exit 2); a UserError becomes one line and exit 2."""
    try:
        app()
    except UserError as e:
        console.print(f"[bold red]error:[/] {one_line(e)}", highlight=False, soft_wrap=True)
        sys.exit(2)
