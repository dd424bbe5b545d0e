"""Where each planned run stands: its folder's state and progress, merged with Slurm's view."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atssrepro import config as cfg
from atssrepro.engine.run_records import LogRecord
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError
from atssrepro.harness.plan import PlannedRun
from atssrepro.harness.slurm_queue import merged_state, slurm_states
from atssrepro.harness.store import Store
from atssrepro.tomlfile import load_toml


@dataclass
class RunStatus:
    run_id: str
    rows: list[str]
    state: RunState
    """The run folder's state (``Store.state``); for a Slurm job, merged with the job's
    (``slurm_queue.merged_state``): pending, running, requeued, cancelled, failed, done..."""
    iteration: int | None
    """How far the run got, of ``iterations``: the iteration its checkpoint holds when it stopped
    (run.json's ``checkpoint_iteration``: where the next start resumes), else the last logged one."""
    iterations: int
    loss: float | None
    message: str
    slurm_job_id: str = ""
    slurm_state: str = ""
    """squeue's or sacct's state of the job ("" when Slurm does not know it)."""
    node: str = ""
    reason: str = ""
    """Why a pending job waits, as squeue says."""
    requeues: int = 0


def run_statuses(runs: Sequence[PlannedRun], store: Store) -> list[RunStatus]:
    """The status of every run in ``runs``; one squeue (and sacct) call for all their jobs."""
    infos = {run.run_id: store.info(run.run_id) for run in runs}
    job_ids = [info["slurm_job_id"] for info in infos.values() if "slurm_job_id" in info]
    jobs = slurm_states(job_ids)
    statuses = []
    for run in runs:
        info, log = infos[run.run_id], store.last_log(run.run_id)
        status = RunStatus(
            run_id=run.run_id,
            rows=[str(row) for row in run.rows],
            state=store.state(run.run_id),
            iteration=_iteration(info, log),
            iterations=run.config.train.iterations,
            loss=log.loss if log else None,
            message=store.corruption(run.run_id) or info.get("message", ""),
        )
        if "slurm_job_id" in info:
            status.slurm_job_id = info["slurm_job_id"]
            if status.slurm_job_id in jobs:
                status.slurm_state, status.node, status.reason = jobs[status.slurm_job_id]
            status.requeues = info.get("requeues", 0)
            status.state = merged_state(status.state, status.slurm_state or None, status.requeues)
        statuses.append(status)
    return statuses


def _iteration(info: dict, log: LogRecord | None) -> int | None:
    stopped_at, logged = info.get("checkpoint_iteration"), log.iter if log else None
    for value in (stopped_at, logged):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def describe(status: RunStatus) -> str:
    """The run's state in one line, as ``run`` ends a run and ``run --dry-run`` plans it:
    ``done``, ``interrupted at iteration 17/20: resumes from there on the next atssrepro run``, ..."""
    text = str(status.state)
    if status.iteration is not None and status.state not in (RunState.DONE, RunState.NOT_RUN):
        text += f" at iteration {status.iteration}/{status.iterations}"
    if status.state is RunState.INTERRUPTED:
        return text + ": resumes from there on the next atssrepro run"
    return f"{text}: {status.message}" if status.message else text


def other_settings(store: Store, run_ids: Sequence[str]) -> str | None:
    """When none of ``run_ids`` is in the store but other runs are: one line that says under which
    --preset and --data they were made (run.json and config.toml record them), else None."""
    if not store.root.is_dir() or any(store.run(run_id).path.exists() for run_id in run_ids):
        return None
    settings: Counter[tuple[str, str]] = Counter()
    for folder in store.root.iterdir():
        preset = store.info(folder.name).get("preset") if (folder / "run.json").is_file() else None
        preset = cfg.PAPER.name if preset == "import" else preset  # zoo rows: official checkpoints, as they are
        if preset not in cfg.PRESETS:
            continue
        try:
            root = load_toml(folder / "config.toml")["data"]["root"]
        except (UserError, KeyError, TypeError):  # a folder that is not a run's: not counted
            continue
        settings[preset, str(root)] += 1
    if not settings:
        return None
    results = "" if store.root == Path("results") else f" --results {shlex.quote(str(store.root))}"
    options = [(f"--preset {shlex.quote(p)} --data {shlex.quote(d)}", n) for (p, d), n in settings.most_common()]
    made = options[0][0] if len(options) == 1 else "; ".join(f"{n} with {option}" for option, n in options)
    total = sum(settings.values())
    return (
        f"{total} run(s) in {store.root} were made with other settings: {made} "
        f"(see them: atssrepro status {options[0][0]}{results})"
    )


def outcome_line(run: PlannedRun, store: Store, state: RunState, message: str) -> str:
    """How ``run`` reports a run that ended with ``state``: as ``status`` sees it (:func:`describe`)
    where the run folder records that state, else the state and message as they came (busy, ...)."""
    if state in (RunState.DONE, RunState.FAILED, RunState.DIVERGED, RunState.INTERRUPTED):
        return describe(run_statuses([run], store)[0])
    return f"{state}: {message}" if message else str(state)
