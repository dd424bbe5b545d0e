"""The one way a planned run executes, on any executor: :func:`execute_job`.

A :class:`Job` is what a prepared run folder needs to be executed, as plain data that crosses a
process boundary: the local queue passes it as JSON to its own process (``python -m
atssrepro.harness.worker``, through torchrun for DDP), and Slurm pickles it into its job
(``harness/slurm_job.py``). :func:`execute_job` trains the run (or, evaluation only, imports the
official checkpoint and evaluates it), then evaluates it with multi-scale testing when a row needs
that, and returns an :class:`Outcome`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from atssrepro import distributed
from atssrepro.engine.official_import import import_official_checkpoint
from atssrepro.engine.run import evaluate_run, execute
from atssrepro.engine.run_dir import RunBusy, RunDir
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError, one_line


@dataclass(frozen=True)
class Job:
    run_dir: str
    """The prepared run folder (``config.toml`` written), absolute where it crosses to another machine."""
    preset: str
    """The name of the run's preset, recorded in run.json."""
    tta: bool = False
    """Then evaluate with multi-scale + flip testing (``metrics_tta.json``)."""
    official_checkpoint: str = ""
    """Evaluation only: the official checkpoint to import and evaluate instead of training."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Outcome:
    run_id: str
    state: RunState
    """done, skipped (done already), busy (another process trains it), failed, diverged,
    interrupted; on Slurm also submitted and queued (in the queue already)."""
    message: str = ""


def execute_job(job: Job, console: Console) -> Outcome:
    """Execute ``job`` in this process (every process of a DDP run calls it).

    Bad input, a diverged run and a busy run come back as the outcome, the run folder recording
    the first two (failed, diverged; a busy run's folder belongs to the process training it);
    KeyboardInterrupt (Ctrl-C, a stop signal) and crashes propagate, the folder recording them too
    (interrupted, failed) and staying resumable.
    """
    run = RunDir(job.run_dir)
    try:
        if job.official_checkpoint:
            import_and_evaluate(run, Path(job.official_checkpoint), console)
        else:
            execute(run.read_config(), run, job.preset, console)
        if job.tta and not RunDir(run.path, tta=True).metrics_path.exists():
            evaluate_run(run.path, console, tta=True)
    except RunBusy as e:
        return Outcome(run.path.name, RunState.BUSY, str(e))
    except UserError as e:
        message = one_line(e)
        recorded = None if run.corruption() else run.info().get("state")
        if recorded in (RunState.DIVERGED, RunState.FAILED):  # training recorded why it stopped
            return Outcome(run.path.name, RunState(recorded), message)
        if recorded is not None and distributed.is_main():  # an import or an evaluation failed
            run.set_state(RunState.FAILED, message=message)
        return Outcome(run.path.name, RunState.FAILED, message)
    return Outcome(run.path.name, RunState.DONE)


def import_and_evaluate(run: RunDir, checkpoint: Path, console: Console) -> None:
    """An evaluation-only run: import the official ``checkpoint`` into ``run`` (unless an earlier
    start did), then evaluate it (unless that is done too)."""
    distributed.init_from_env()
    if distributed.is_main() and not run.checkpoint_path.exists():
        import_official_checkpoint(checkpoint, run.read_config(), run.path)
    distributed.barrier()
    if not run.metrics_path.exists():
        evaluate_run(run.path, console)
