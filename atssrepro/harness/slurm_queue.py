"""What Slurm says of the jobs (squeue, sacct), what ``status`` makes of it, and scancel.

Imports neither torch nor submitit: ``atssrepro status`` and ``cancel`` use it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from typing import NamedTuple

from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError

ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"}
"""Slurm job states after which a job never runs again; every other state may still run."""


def merged_state(run_state: RunState, slurm_state: str | None, requeues: int = 0) -> RunState:
    """What ``atssrepro status`` calls a run that was submitted to Slurm.

    ``run_state`` is the run folder's (``Store.state``), ``slurm_state`` its job's in squeue or
    sacct (None when Slurm no longer knows the job). A finished run keeps its own state; otherwise
    Slurm knows best: pending (requeued after a preemption or a time limit), running, cancelled,
    or failed when the job ended without the run finishing (out of memory, node failure, time).
    """
    run_state = RunState(run_state)
    if run_state in (RunState.DONE, RunState.DIVERGED) or slurm_state is None:
        return run_state
    if slurm_state in ("PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "PREEMPTED", "SUSPENDED"):
        return RunState.REQUEUED if requeues or slurm_state != "PENDING" else RunState.PENDING
    if slurm_state == "CANCELLED":
        return RunState.CANCELLED
    if slurm_state in ENDED:
        return run_state if run_state is RunState.FAILED or slurm_state == "COMPLETED" else RunState.FAILED
    return RunState.RUNNING  # RUNNING, CONFIGURING, COMPLETING, STAGE_OUT, SIGNALING, ...


class JobState(NamedTuple):
    """What Slurm says of one job."""

    state: str
    """PENDING, RUNNING, COMPLETED, CANCELLED, ... (see ``ENDED``)."""
    node: str
    """The node list; empty while the job waits."""
    reason: str
    """Why a pending job waits (Priority, Resources, BeginTime, "launch failed requeued held"...); "" otherwise."""


def slurm_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The states of the jobs that squeue (or sacct, where the cluster keeps accounting) still
    knows, by job id; ``{}`` where Slurm is not installed."""
    wanted = sorted(set(job_ids))
    if not wanted or shutil.which("squeue") is None:
        return {}
    found: dict[str, JobState] = {}
    ids = ",".join(wanted)
    queue = subprocess.run(
        ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N|%r", f"--jobs={ids}"],
        capture_output=True, text=True,
    )  # fmt: skip
    # squeue fails when it knows none of the jobs; it lists the others when it knows some.
    for line in queue.stdout.splitlines():
        job_id, state, node, reason = line.split("|", 3)
        found[job_id] = JobState(state, node, "" if reason == "None" or state != "PENDING" else reason)
    missing = [job_id for job_id in wanted if job_id not in found]
    if missing and shutil.which("sacct"):
        accounting = subprocess.run(
            ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State,NodeList",
             f"--jobs={','.join(missing)}"],
            capture_output=True, text=True,
        )  # fmt: skip
        for line in accounting.stdout.splitlines() if accounting.returncode == 0 else []:
            job_id, state, node = line.split("|")
            found.setdefault(job_id, JobState(state.split()[0], node, ""))  # "CANCELLED by 0" -> CANCELLED
    return {job_id: found[job_id] for job_id in wanted if job_id in found}


def live_jobs(job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: Slurm state} of the jobs among ``job_ids`` (empty ones skipped) that may still run."""
    states = slurm_states(job_id for job_id in job_ids if job_id)
    return {job_id: job.state for job_id, job in states.items() if job.state not in ENDED}


def cancel_jobs(job_ids: Iterable[str]) -> None:
    """Cancel the jobs (scancel); their runs keep their checkpoints and resume when run again."""
    ids = sorted(set(job_ids))
    if ids:
        slurm_command(["scancel", *ids])


def slurm_command(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise UserError(f"{command[0]} not found: Slurm is not installed here")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}")
