"""The commands of the paper's tables: ``run``, ``list``, ``show``, ``status``, ``cancel`` and ``report``.

They plan the runs of table specs; only ``run`` without ``--dry-run`` imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from atssrepro.cli.common import (
    DataOption,
    NoiseOption,
    PresetOption,
    ResultsOption,
    SeedsOption,
    TablesArgument,
    app,
    check_torch_pair,
    console,
    count_option,
    hint_other_settings,
    make_table,
    stdout,
)
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError
from atssrepro.harness.stats import DEFAULT_SIGMA, check_noise

if TYPE_CHECKING:  # imported on use
    pass


def load_specs(tables: list[str] | None) -> list:
    from atssrepro.harness.specs import available_tables, load_table

    return [load_table(name) for name in (tables or available_tables())]


class ExecutorName(str, Enum):
    local = "local"
    slurm = "slurm"


@app.command()
def run(
    tables: list[str] = typer.Argument(..., metavar="TABLE...", help="Table names, e.g. table1 table3 (or zoo)."),
    preset: str = PresetOption,
    rows: list[str] = typer.Option([], "--rows", metavar="ROW", help="Only this row id (repeatable)."),
    seeds: int = SeedsOption,
    data: str | None = DataOption,
    results: Path = ResultsOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs, their config and cost; train nothing."),
    force: bool = typer.Option(False, "--force", help="Train finished runs again from scratch."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="With --dry-run: one JSON object per run, then one per claim of the tables "
        "(with --rows: the claims those rows decide).",
    ),
    gpu_type: str | None = typer.Option(
        None,
        metavar="NAME",
        help="With --dry-run: the device to give hours for, as nvidia-smi names it (default: this machine's).",
    ),
    executor: ExecutorName = typer.Option(
        ExecutorName.local,
        "--executor",
        "-e",
        metavar="local|slurm",
        help="local: this machine's GPUs (or CPU); slurm: a Slurm cluster.",
    ),
    gpus: str | None = typer.Option(
        None,
        metavar="IDS",
        help="local: GPU ids, e.g. 0,1,2,3 (default: every visible GPU, else the CPU; cpu0,cpu1: two CPU slots).",
    ),
    gpus_per_run: int = count_option(
        1, "--gpus-per-run", low=1, high=64, help="local: GPUs per run; with more than one a run trains with DDP."
    ),
    profile: str | None = typer.Option(
        None, metavar="NAME|FILE", help="slurm: a profile of slurm/ (local, example_cluster, yours) or a TOML file."
    ),
    wait: bool = typer.Option(False, "--wait", help="slurm: stay until every job has ended, then summarize."),
    zoo_dir: Path | None = typer.Option(
        None,
        "--zoo-dir",
        metavar="DIR",
        help="The folder of the official checkpoints that evaluation-only rows (zoo) import.",
    ),
    noise: float | None = typer.Option(
        None,
        "--noise",
        metavar="SIGMA",
        help=f"With --dry-run: the run-to-run standard deviation of AP that the seeds each claim needs are planned "
        f"for (default {DEFAULT_SIGMA}: docs/claims.md).",
    ),
) -> None:
    """Train and evaluate every run the tables need; runs shared by several rows train once.

    Evaluation-only rows (`atssrepro run zoo --zoo-dir DIR`) import an official checkpoint of DIR
    and evaluate it; a missing file fails that row only.

    With --dry-run it also tells, per claim of the tables (the paper's conclusions), how many seeds
    per row a decisive verdict needs and what they cost.

    Finished runs are skipped, interrupted ones resume. Locally, a queue packs the runs onto the
    GPUs, --gpus-per-run each, and starts the next run whenever one ends; on Slurm, the pending
    runs go to the cluster as one job array and the command returns (unless --wait). A failing
    run is recorded and the others go on; the exit code is 1 when any run did not finish.
    """
    from atssrepro import config as cfg
    from atssrepro.harness.gpus import parse_gpus
    from atssrepro.harness.plan import plan
    from atssrepro.harness.store import Store, check_inputs

    specs, chosen = load_specs(tables), cfg.preset_named(preset)
    sigma = check_noise(DEFAULT_SIGMA if noise is None else noise, "--noise")
    runs = plan(specs, chosen, rows, seeds, data, zoo_dir)
    if dry_run:
        from atssrepro.cli.dry_run import print_plan
        from atssrepro.engine.preflight import data_problem
        from atssrepro.errors import warn
        from atssrepro.harness.claim_plan import claims_plan
        from atssrepro.harness.throughput import local_device

        problem = next(filter(None, (data_problem(run.config.data, run.splits) for run in runs)), None)
        if problem:
            warn(f"{problem} (without --dry-run, run stops here)")
        device = gpu_type or local_device()
        one_seed = runs if seeds == 1 and not rows else plan(specs, chosen, (), 1, data, zoo_dir)
        claims = claims_plan(specs, one_seed, sigma, device if chosen.comparable else None, seeds, rows)
        print_plan(runs, Store(results), as_json, device, claims)
        return
    if gpu_type is not None:
        raise UserError("--gpu-type is an option of --dry-run: it names the device to give hours for")
    if noise is not None:
        raise UserError("--noise is an option of --dry-run (and report): the noise the claims' seeds are planned at")
    if zoo_dir is None and any(run.checkpoint for run in runs):
        raise UserError("evaluation-only rows import official checkpoints: give --zoo-dir DIR, the folder holding them")
    # The options first, then the inputs, before torch is imported: a wrong --data is one line at once.
    if executor is ExecutorName.local:
        if profile is not None or wait:
            raise UserError("--profile and --wait are options of --executor slurm")
        if gpus is not None:
            parse_gpus(gpus)
    else:
        if gpus is not None or gpus_per_run != 1:
            raise UserError("--gpus and --gpus-per-run are options of --executor local; on Slurm the profile sets them")
        if profile is None:
            raise UserError("--executor slurm needs --profile NAME (a file of slurm/) or --profile FILE.toml")
        from atssrepro.harness.slurm_profile import load_profile

        slurm_profile = load_profile(profile)
    store = Store(results)
    if not force:
        store.refuse_corrupt([r.run_id for r in runs])
    check_inputs(runs, store, force)
    check_torch_pair()
    if executor is ExecutorName.local:
        from atssrepro.harness.executors import QueueExecutor, local_devices

        queue = QueueExecutor(console, local_devices(gpus), gpus_per_run)
        try:
            outcomes = queue.execute(runs, store, force)
        except KeyboardInterrupt:
            console.print("interrupted: the runs that were training saved their last iteration; run again to resume")
            raise typer.Exit(130) from None
    else:
        from atssrepro.harness.slurm import SlurmExecutor

        slurm = SlurmExecutor(console, slurm_profile)
        outcomes = slurm.execute(runs, store, force)
        if not wait:
            counts = Counter(o.state for o in outcomes)
            console.print(", ".join(f"{n} {state}" for state, n in counts.items()))
            console.print("follow them with `atssrepro status`, collect them with `atssrepro report`")
            return
        try:
            outcomes = slurm.wait(outcomes, store)
        except KeyboardInterrupt:
            console.print("stopped waiting; the jobs go on (`atssrepro status`, `atssrepro cancel`)")
            raise typer.Exit(130) from None
    failed = [o for o in outcomes if o.state not in (RunState.DONE, RunState.SKIPPED)]
    console.print(f"{len(outcomes) - len(failed)} of {len(outcomes)} runs finished")
    if failed:
        from atssrepro.harness.status import outcome_line

        by_id = {run.run_id: run for run in runs}
        for o in failed:
            console.print(f"  {o.run_id}: {outcome_line(by_id[o.run_id], store, o.state, o.message)}")
        raise typer.Exit(1)


@app.command("list")
def list_tables(
    tables: list[str] | None = TablesArgument,
    results: Path = ResultsOption,
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
) -> None:
    """The tables (by default every spec: the paper's, then assigners and zoo), their rows and how many of their
    runs are done."""
    from atssrepro import config as cfg
    from atssrepro.harness.plan import plan
    from atssrepro.harness.specs import available_specs
    from atssrepro.harness.store import Store

    store = Store(results)
    chosen = cfg.preset_named(preset)
    table = make_table("table", "caption", "rows", "runs", f"done ({chosen})")
    planned = []
    for spec in load_specs(tables or available_specs()):
        if chosen.overrides and any(row.evaluation_only for row in spec.rows):
            # zoo evaluates the official checkpoints as they are: under --preset paper only.
            table.add_row(spec.name, spec.caption, str(len(spec.rows)), "-", f"- (--preset {cfg.PAPER.name} only)")
            continue
        runs = plan([spec], chosen, (), seeds, data)
        done = sum(store.state(r.run_id) is RunState.DONE for r in runs)
        table.add_row(spec.name, spec.caption, str(len(spec.rows)), str(len(runs)), str(done))
        planned += [r.run_id for r in runs]
    stdout.print(table)
    hint_other_settings(store, planned)


@app.command()
def show(
    table_name: str = typer.Argument(..., metavar="TABLE", help="A table name: table1..table8, zoo or assigners."),
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
) -> None:
    """A table's rows: their config fields (as --set takes them), run ids and published numbers."""
    from atssrepro import config as cfg
    from atssrepro.harness.plan import assignments, resolve_row, row_run_id, row_seeds

    chosen = cfg.preset_named(preset)
    (spec,) = load_specs([table_name])
    stdout.print(Text.assemble((spec.title, "bold"), f": {spec.caption}"))
    if spec.base:
        stdout.print("base: " + "  ".join(assignments(spec.base)), soft_wrap=True)
    table = make_table("row", "label", "config", "run", *spec.metrics)
    for row in spec.rows:
        run_ids = [] if row.reference_only else [
            row_run_id(row, resolve_row(spec, row, chosen, seed, data)) for seed in row_seeds(row, seeds)
        ]  # fmt: skip
        published = [_published(row, m) for m in spec.metrics]
        lines = assignments(row.config) + (["+ tta"] if row.tta else [])
        config = "\n".join(lines + ([f"evaluates {row.checkpoint}"] if row.evaluation_only else []))
        config = "(reference)" if row.reference_only else config or "(base)"
        table.add_row(row.id, row.label, config, "\n".join(run_ids), *published)
    stdout.print(table)
    contexts = [f"{row.id}: {row.context_source}" for row in spec.rows if row.context]
    if contexts:
        sources = "; ".join(f"{key} = {text}" for key, text in spec.sources.items())
        text = f"(n): context, reported for another recipe, never judged. {'; '.join(contexts)}. Sources: {sources}"
        stdout.print(text, highlight=False, markup=False, soft_wrap=True)


def _published(row, metric: str) -> str:
    """A row's published number for ``metric`` (``show``), then its context number in parentheses, or "-"."""
    numbers = [f"{row.published[metric]:.1f}"] if metric in row.published else []
    numbers += [f"({row.context[metric]:.1f})"] if metric in row.context else []
    return " ".join(numbers) or "-"


@app.command()
def status(
    tables: list[str] | None = TablesArgument,
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
    results: Path = ResultsOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per run."),
) -> None:
    """Each run's state, iteration and last loss; for runs on Slurm, also their job, its state and node.

    States: not run, pending, running, done, failed, diverged, interrupted (resumes on the next
    `atssrepro run`), corrupt; on Slurm also requeued (after a preemption or a time limit) and
    cancelled. The iteration is the last one logged while a run trains, else the one its checkpoint
    holds: where the next start resumes.
    """
    from atssrepro import config as cfg
    from atssrepro.harness.plan import plan
    from atssrepro.harness.status import run_statuses
    from atssrepro.harness.store import Store

    store = Store(results)
    statuses = run_statuses(plan(load_specs(tables), cfg.preset_named(preset), (), seeds, data), store)
    hint_other_settings(store, [s.run_id for s in statuses])
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
        table.add_row(s.run_id, ", ".join(s.rows), s.state, iteration, loss, *slurm_cells, s.message)
    stdout.print(table)


@app.command()
def cancel(
    targets: list[str] = typer.Argument(..., metavar="TABLE|RUN_ID...", help="Table names or run ids."),
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
    results: Path = ResultsOption,
) -> None:
    """Cancel the Slurm jobs of every run of the tables, or of the runs given by id.

    The runs keep their checkpoints: `atssrepro run` submits them again and they resume.
    """
    from atssrepro import config as cfg
    from atssrepro.harness.plan import plan
    from atssrepro.harness.slurm_queue import cancel_jobs, live_jobs
    from atssrepro.harness.specs import available_specs, load_table
    from atssrepro.harness.store import Store

    chosen = cfg.preset_named(preset)
    store = Store(results)
    run_ids: list[str] = []
    for target in targets:
        if target in available_specs():
            run_ids += [run.run_id for run in plan([load_table(target)], chosen, (), seeds, data)]
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
        console.print(f"{run_id}: {verdict}")
    console.print(f"cancelled {len(live)} job(s)")


@app.command()
def report(
    tables: list[str] | None = TablesArgument,
    fmt: str = typer.Option(
        "terminal", "--format", "-f", metavar="FORMAT", help="terminal, markdown, csv, latex, html or json."
    ),
    preset: str = PresetOption,
    seeds: int = SeedsOption,
    data: str | None = DataOption,
    results: Path = ResultsOption,
    out: Path | None = typer.Option(None, "--out", "-o", metavar="FILE", help="Write the report to this file."),
    plots: Path | None = typer.Option(
        None,
        "--plots",
        metavar="DIR",
        help="Write PNG plots here: the sweep tables (4-6) and the claims' forest plot, which html and markdown show.",
    ),
    claims: bool = typer.Option(False, "--claims", help="Only the verdicts of the paper's claims (Tables 1-7)."),
    noise: float = NoiseOption,
) -> None:
    """The reproduced numbers next to the published ones, laid out as the paper's tables, then whether the
    paper's conclusions hold (holds, fails, unresolved, not run; docs/claims.md)."""
    from atssrepro import config as cfg
    from atssrepro.fileio import write_text
    from atssrepro.harness.collect import collect
    from atssrepro.harness.report import (
        CLAIMS_PLOT,
        check_format,
        claim_verdicts,
        plot_sweeps,
        render,
        render_claims,
    )
    from atssrepro.harness.store import Store
    from atssrepro.harness.verdicts import plot_claims

    check_format(fmt)
    noise = check_noise(noise, "--noise")
    specs = load_specs(tables)
    store = Store(results)
    frame = collect(specs, cfg.preset_named(preset), seeds, store, data)
    verdicts = claim_verdicts(specs, frame, noise)
    plotted: dict[str, str] = {}
    # Plot paths relative to the report, so that the report and its plots can move together.
    report_dir = Path(out).parent if out is not None else Path.cwd()
    if plots is not None and not claims:
        for spec in specs:
            if not spec.sweep_axis:
                swept = ", ".join(s.name for s in load_specs(None) if s.sweep_axis)
                console.print(f"{spec.name}: no plot (plots are drawn for the tables that sweep a value: {swept})")
        for spec, path in plot_sweeps(specs, frame, plots):
            console.print(f"wrote {path}")
            plotted[spec.name] = os.path.relpath(path, report_dir)
    if plots is not None and len(verdicts):
        path = plot_claims(verdicts, plots / "claims.png")
        console.print(f"wrote {path}")
        plotted[CLAIMS_PLOT] = os.path.relpath(path, report_dir)
    if claims:
        text = render_claims(specs, verdicts, fmt, noise, plotted.get(CLAIMS_PLOT, ""))
    else:
        text = render(specs, frame, fmt, plotted, noise)
    if out is not None:
        write_text(out, text)
        console.print(f"wrote {out}")
    elif fmt == "terminal":
        stdout.print(text, soft_wrap=True)
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    hint_other_settings(store, list(frame["run_id"].dropna().unique()))
