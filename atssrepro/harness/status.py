"""Where each planned run stands: its folder's state and progress, merged with Slurm's view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from atssrepro.engine.run_state import RunState
from atssrepro.harness.plan import PlannedRun
from atssrepro.harness.slurm_queue import merged_state, slurm_states
from atssrepro.harness.store import Store


@dataclass
class RunStatus:
    run_id: str
    rows: list[str]
    state: RunState
    """The run folder's state (``Store.state``); for a Slurm job, merged with the job's
    (``slurm_queue.merged_state``): pending, running, requeued, cancelled, failed, done..."""
    iteration: int | None
    """The last logged training iteration, of ``iterations``."""
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
            iteration=log.get("iter"),
            iterations=run.config.train.iterations,
            loss=log.get("loss"),
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
