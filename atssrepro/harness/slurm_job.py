"""What one Slurm array task runs: :class:`TrainJob`, a planned run's job with its requeue handling.

Each task executes its :class:`~atssrepro.harness.runner.Job` with ``runner.execute_job``, as the
local queue's processes do. When Slurm announces a preemption or the time limit with submitit's
signal (USR2), the job finishes its training iteration, checkpoints it, and submitit requeues the
job, which resumes from there.
"""

from __future__ import annotations

import os
import signal
import time
import zlib
from pathlib import Path
from types import FrameType
from typing import Any

import submitit
import torch

import atssrepro
from atssrepro import distributed
from atssrepro.engine.run_dir import RunDir
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError
from atssrepro.harness.runner import Job, execute_job
from atssrepro.terminal import plain_console


class TrainJob(submitit.helpers.Checkpointable):
    """What one array task runs: ``job``, in every task of the Slurm job; with several tasks (GPUs)
    they form one DDP process group. A requeued job starts here again and resumes from the run
    folder's checkpoint."""

    def __init__(self, job: Job, workdir: str) -> None:
        # Not named ``checkpoint``: that is submitit's requeue hook, the method below.
        self.job = job
        self.workdir = workdir
        """The submitter's working directory: a relative ``data.root`` is relative to it."""

    def __call__(self) -> None:
        # The job started in the snapshot so that Python imported atssrepro from there.
        os.chdir(self.workdir)
        # As many threads as the CPUs Slurm gave this task, not one per core of a shared node.
        torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", torch.get_num_threads())))
        env = submitit.JobEnvironment()
        # How often Slurm requeued this job so far: preemptions, time limits, node failures.
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if env.num_tasks > 1:
            os.environ["MASTER_PORT"] = str(rendezvous_port(env.job_id, restarts))
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        run = RunDir(self.job.run_dir)
        if env.global_rank == 0:
            info = run.info()
            code = str(Path(atssrepro.__file__).resolve().parents[1])  # the snapshot
            requeues = max(info.get("requeues", 0), restarts)
            state = info.get("state", RunState.PENDING)
            run.set_state(state, slurm_node=env.hostname, code=code, requeues=requeues)
        console = plain_console(stderr=True, force_terminal=False)
        requeue_signal = _RequeueSignal()
        try:
            outcome = execute_job(self.job, console)
            if outcome.state is not RunState.DONE:
                raise UserError(outcome.message)  # the job fails; the run folder says why
        except BaseException:
            # Stopped by the requeue signal, or by the SIGTERM that Slurm may send with it (the
            # training loop stops on either): requeue, resume later.
            if requeue_signal.wait():
                requeue_signal.requeue()  # on rank 0: checkpoint(), scontrol requeue, exit
            raise
        finally:
            distributed.destroy()

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on rank 0 before it requeues the job. The run folder holds the latest
        checkpoint, which the next start resumes from: record the requeue, resubmit this same job.
        (Requeues without this call, after a node failure, are counted when the job starts again.)"""
        run = RunDir(self.job.run_dir)
        requeues = run.info().get("requeues", 0) + 1
        run.set_state(RunState.PENDING, requeues=requeues, message="requeued by Slurm (preemption or time limit)")
        return super().checkpoint(*args, **kwargs)


class _StopForRequeue(KeyboardInterrupt):
    """Slurm's requeue signal arrived outside the training loop: stop now, requeue."""


class _RequeueSignal:
    """Defers submitit's requeue signal (USR2) to a point where the run folder is consistent.

    submitit's own handler checkpoints and requeues at once, wherever the main thread is. Here,
    during training, the signal becomes a stop request of the training loop (its SIGTERM
    handler), which finishes the iteration, checkpoints it and raises ``train.Interrupted``;
    elsewhere it raises :class:`_StopForRequeue`. The job then calls :meth:`requeue`.
    """

    GRACE_S = 3.0
    """How long a run that ended otherwise waits for the signal: Slurm's SIGTERM may come just
    before it (submitit's ``job._interrupt()`` sends both)."""

    def __init__(self) -> None:
        self.signum = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        self.received = False
        self._submitit_handler = signal.getsignal(self.signum)
        self._sigterm_outside_training = signal.getsignal(signal.SIGTERM)
        signal.signal(self.signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        already = self.received
        self.received = True
        training_stop = signal.getsignal(signal.SIGTERM)
        if training_stop is not self._sigterm_outside_training and callable(training_stop):
            training_stop(signal.SIGTERM, frame)
        elif not already:
            raise _StopForRequeue("stopped by Slurm's requeue signal")

    def wait(self) -> bool:
        """Whether the requeue signal came, waiting ``GRACE_S`` for it."""
        deadline = time.monotonic() + self.GRACE_S
        while not self.received and time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except _StopForRequeue:
                break
        return self.received

    def requeue(self) -> None:
        """submitit's handling of the signal: checkpoint() and requeue on rank 0, then exit."""
        self._submitit_handler(self.signum, None)


def rendezvous_port(job_id: str, restarts: int) -> int:
    """The MASTER_PORT of a job's DDP rendezvous: the same on all its tasks, and another one after
    each requeue, so that a restarted job never meets the store left over by its previous start."""
    return 20000 + zlib.crc32(f"{job_id}/{restarts}".encode()) % 40000
