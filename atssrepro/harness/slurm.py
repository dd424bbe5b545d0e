"""Planned runs as Slurm jobs, through submitit.

:class:`SlurmExecutor` prepares each run folder as the local executor does, copies the code into
``<results>/.snapshots/<time>/`` and submits every pending run as one job array that runs from
that copy, so editing the checkout while jobs wait in the queue changes nothing. It returns at
once; :meth:`SlurmExecutor.wait` polls until the jobs end. Each job is a
:class:`~atssrepro.harness.slurm_job.TrainJob`; profiles are ``slurm_profile.py``, the queue's
view of the jobs ``slurm_queue.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import submitit
from rich.console import Console

from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError
from atssrepro.harness.executors import (
    check_batch_split,
    fetch_pretrained,
    job_of,
    missing_checkpoint,
    prepare,
)
from atssrepro.harness.plan import PlannedRun
from atssrepro.harness.runner import Outcome
from atssrepro.harness.slurm_job import TrainJob
from atssrepro.harness.slurm_profile import SlurmProfile
from atssrepro.harness.slurm_queue import ENDED, live_jobs, slurm_command, slurm_states
from atssrepro.harness.store import Store, check_inputs

CODE_ROOT = Path(__file__).resolve().parents[2]
"""The checkout: ``atssrepro/`` and ``tables/`` are copied from here into each snapshot."""


class SlurmExecutor:
    """Submits runs to Slurm as one job array and returns; see the module docstring."""

    def __init__(
        self, console: Console, profile: SlurmProfile, snapshot_root: Path | None = None, code_root: Path = CODE_ROOT
    ) -> None:
        """``snapshot_root`` holds the code snapshots and job logs (default ``<results>/.snapshots``);
        ``code_root`` is the folder whose ``atssrepro/`` and ``tables/`` are snapshotted."""
        self.console = console
        self.profile = profile
        self.snapshot_root = snapshot_root
        self.code_root = code_root

    def execute(self, runs: Sequence[PlannedRun], store: Store, force: bool = False) -> list[Outcome]:
        """Submit every run that is not done, queued or training elsewhere; outcome "submitted"
        with the job id (also in the run's run.json as ``slurm_job_id``), or "queued" for a run
        whose job is in the queue already."""
        check_batch_split(runs, self.profile.nodes * self.profile.tasks_per_node, "nodes x processes per node")
        check_inputs(runs, store, force)
        fetch_pretrained(runs, store, force)
        outcomes: dict[str, Outcome] = {}
        job_ids = {run.run_id: store.info(run.run_id).get("slurm_job_id", "") for run in runs}
        queued = live_jobs(job_ids.values())
        pending = []
        for run in runs:
            job_id = job_ids[run.run_id]
            if job_id in queued:
                log = store.info(run.run_id).get("slurm_log")
                message = f"job {job_id} ({queued[job_id].lower()}), its log: {log}"
                outcomes[run.run_id] = Outcome(run.run_id, RunState.QUEUED, message)
            elif store.run(run.run_id).path.exists() and store.run(run.run_id).is_locked():
                outcomes[run.run_id] = Outcome(run.run_id, RunState.BUSY, "being trained by another process")
            elif not prepare(run, store, force):
                outcomes[run.run_id] = Outcome(run.run_id, RunState.SKIPPED, "already done")
            elif (missing := missing_checkpoint(run, store)) is not None:
                outcomes[run.run_id] = missing
            else:
                pending.append(run)
        if pending:
            for run, job in zip(pending, self._submit(pending, store)):
                message = f"job {job.job_id}, its log: {job.paths.stderr}"
                outcomes[run.run_id] = Outcome(run.run_id, RunState.SUBMITTED, message)
        for index, run in enumerate(runs, 1):
            outcome = outcomes[run.run_id]
            rows = ", ".join(map(str, run.rows))
            line = f"[{index}/{len(runs)}] {run.run_id} ({rows}): {outcome.state}, {outcome.message}"
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        return [outcomes[run.run_id] for run in runs]

    def _submit(self, runs: Sequence[PlannedRun], store: Store) -> list[submitit.Job]:
        """One job array for ``runs``, submitted on hold, recorded in run.json, then released."""
        if shutil.which("sbatch") is None or shutil.which("srun") is None:
            raise UserError("no Slurm here (sbatch/srun not found); use a login node, or slurm/start_local_cluster.sh")
        snapshot = self._snapshot(store)
        executor = self._executor(snapshot)
        workdir = os.getcwd()
        try:
            with executor.batch():
                jobs = [executor.submit(TrainJob(job_of(run, store), workdir)) for run in runs]
        except submitit.core.utils.FailedJobError as e:
            raise UserError(f"sbatch refused the jobs: {'; '.join(str(e).strip().splitlines())}") from None
        for run, job in zip(runs, jobs):
            store.run(run.run_id).set_state(
                RunState.PENDING, slurm_job_id=job.job_id, slurm_log=str(job.paths.stderr), snapshot=str(snapshot),
                requeues=0, message="",
            )  # fmt: skip
        # Released only now, so that no job can write its run.json before the job id is in it.
        slurm_command(["scontrol", "release", jobs[0].job_id.split("_")[0]])
        self.console.print(f"submitted {len(jobs)} job(s) running the code in {snapshot}")
        return jobs

    def _snapshot(self, store: Store) -> Path:
        """A copy of ``atssrepro/`` and ``tables/`` that the jobs import from; also their log folder."""
        root = self.snapshot_root or store.root / ".snapshots"
        root.mkdir(parents=True, exist_ok=True)
        snapshot = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root)).resolve()
        for name in ("atssrepro", "tables"):
            shutil.copytree(self.code_root / name, snapshot / name, ignore=shutil.ignore_patterns("__pycache__"))
        return snapshot

    def _executor(self, snapshot: Path) -> submitit.AutoExecutor:
        p = self.profile
        executor = submitit.AutoExecutor(snapshot / "logs", cluster="slurm", slurm_max_num_timeout=p.max_timeouts)
        optional = {
            "slurm_partition": p.partition,
            "slurm_account": p.account,
            "slurm_qos": p.qos,
            "slurm_constraint": p.constraint,
            "gpus_per_node": p.gpus_per_node,
            "mem_gb": p.mem_gb,
        }
        executor.update_parameters(
            name="atssrepro",
            timeout_min=p.time_min,
            nodes=p.nodes,
            tasks_per_node=p.tasks_per_node,
            cpus_per_task=p.cpus_per_task,
            slurm_array_parallelism=p.array_parallelism,
            slurm_setup=list(p.setup),
            # Start in the snapshot, so that `python -m submitit...` imports atssrepro from it;
            # hold until the job ids are recorded.
            slurm_additional_parameters={**p.sbatch, "chdir": str(snapshot), "hold": True},
            **{key: value for key, value in optional.items() if value},
        )
        return executor

    def wait(self, outcomes: Sequence[Outcome], store: Store, max_poll_s: float = 30.0) -> list[Outcome]:
        """Block until the jobs of the "submitted" and "queued" outcomes have ended; their final
        outcomes. Slurm is asked every tenth of the time waited so far, at least every second and
        at most every ``max_poll_s``: short jobs are seen to end soon, long ones cost few squeues.

        A job that ended without its run reaching done, failed or diverged (out of memory, node
        failure, out of time) is recorded as failed in run.json, a cancelled one as interrupted.
        """
        waiting = (RunState.SUBMITTED, RunState.QUEUED)
        jobs = {o.run_id: store.info(o.run_id)["slurm_job_id"] for o in outcomes if o.state in waiting}
        states = slurm_states(jobs.values())
        started = time.monotonic()
        while any(job.state not in ENDED for job in states.values()):
            time.sleep(min(max_poll_s, max(1.0, (time.monotonic() - started) / 10)))
            states = slurm_states(jobs.values())
        final = []
        for outcome in outcomes:
            if outcome.run_id not in jobs:
                final.append(outcome)
                continue
            job_id = jobs[outcome.run_id]
            state, info = store.state(outcome.run_id), store.info(outcome.run_id)
            if state not in (RunState.DONE, RunState.FAILED, RunState.DIVERGED):
                slurm_state = states[job_id].state if job_id in states else "ended"
                state = RunState.INTERRUPTED if slurm_state == "CANCELLED" else RunState.FAILED
                message = f"job {job_id} {slurm_state.lower()}; see {info.get('slurm_log')}"
                store.run(outcome.run_id).set_state(state, message=message)
                info = store.info(outcome.run_id)
            final.append(Outcome(outcome.run_id, state, "" if state is RunState.DONE else info.get("message", "")))
        return final
