"""Every state a run (or a table row) can be shown in, by any command: one type."""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    """A run's state. The first six are recorded in its ``run.json``; the others are what the
    commands make of a run folder (``Store.state``), of its Slurm job, or of an executor's attempt.
    Values are the words the commands print and ``--json`` writes."""

    PENDING = "pending"
    """Prepared, not started (or requeued on Slurm and waiting)."""
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DIVERGED = "diverged"
    """The loss became NaN or inf: not evaluated, not resumed."""
    INTERRUPTED = "interrupted"
    """Stopped by a signal, or marked running while no live process holds it (killed): resumes."""

    NOT_RUN = "not run"
    """No run folder yet."""
    CORRUPT = "corrupt"
    """A record of the run folder is unreadable (``RunDir.corruption``)."""
    REFERENCE = "reference"
    """A table row of a competitor's numbers: never run."""
    BUSY = "busy"
    """Another process holds the run's lock (:class:`atssrepro.engine.run_dir.RunBusy`)."""
    SKIPPED = "skipped"
    """Done already: nothing to do."""
    SUBMITTED = "submitted"
    """Slurm: submitted by this command."""
    QUEUED = "queued"
    """Slurm: its job was in the queue already."""
    REQUEUED = "requeued"
    """Slurm: waiting again after a preemption or a time limit."""
    CANCELLED = "cancelled"
    """Slurm: its job was cancelled."""

    def __str__(self) -> str:
        return self.value


RECORDED = (RunState.PENDING, RunState.RUNNING, RunState.DONE, RunState.FAILED, RunState.DIVERGED, RunState.INTERRUPTED)
"""The states a run folder's run.json holds."""
