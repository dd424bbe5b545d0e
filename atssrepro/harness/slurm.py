"""Planned runs as Slurm jobs, through submitit.

:class:`SlurmExecutor` prepares each run folder as the local executor does, copies the code into
``<results>/.snapshots/<time>/`` and submits every pending run as one job array that runs from
that copy, so editing the checkout while jobs wait in the queue changes nothing. It returns at
once; :meth:`SlurmExecutor.wait` polls until the jobs end.

Each job is a :class:`TrainJob`: it trains (or resumes) and evaluates one run folder. When Slurm
announces a preemption or the time limit with submitit's signal (USR2), the job finishes its
training iteration, checkpoints it, and submitit requeues the job, which resumes from there.
The rest of the cluster side: :func:`load_profile` (sbatch settings from ``slurm/*.toml``),
:func:`slurm_states` (squeue/sacct) and :func:`cancel_jobs` (scancel).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import submitit
import torch
from rich.console import Console

import atssrepro
from atssrepro import config as cfg
from atssrepro import distributed
from atssrepro.engine.run import evaluate_run, execute
from atssrepro.engine.run_dir import RunDir
from atssrepro.errors import UserError
from atssrepro.harness.executors import Outcome, check_batch_split, fetch_pretrained, missing_checkpoint, prepare
from atssrepro.harness.plan import PlannedRun
from atssrepro.harness.store import Store

CODE_ROOT = Path(__file__).resolve().parents[2]
"""The checkout: ``atssrepro/`` and ``tables/`` are copied from here into each snapshot."""
PROFILE_DIR = CODE_ROOT / "slurm"

ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"}
"""Slurm job states after which a job never runs again; every other state may still run."""


@dataclass(frozen=True)
class SlurmProfile:
    """Where and with what resources the jobs run: the sbatch settings of one cluster."""

    partition: str = ""
    """Empty: the cluster's default partition."""
    account: str = ""
    qos: str = ""
    nodes: int = 1
    gpus_per_node: int = 0
    """One training process (task) starts per GPU; without GPUs, one per node."""
    cpu_processes_per_node: int = 0
    """Without GPUs: how many training processes (DDP over gloo) start per node; 0: one. For
    trying multi-process runs on CPU nodes, as the tests do on the one-node cluster."""
    cpus_per_task: int = 1
    """CPUs of each training process: its data-loading workers plus one."""
    mem_gb: float = 0.0
    """Memory per node; 0: the partition's default."""
    time_min: int = 60
    """Time limit of one job; a longer run is requeued when it reaches it (see ``max_timeouts``)."""
    max_timeouts: int = 3
    """How many times a run that reaches ``time_min`` is requeued to continue. Preemptions do not count."""
    constraint: str = ""
    """Node features, as sbatch's --constraint (``volta32gb``, ``a100|h100``)."""
    array_parallelism: int = 64
    """At most this many runs of one submission train at the same time."""
    sbatch: dict = field(default_factory=dict)
    """More sbatch options, without the dashes: ``{ exclude = "node7", mail-type = "END" }``."""
    setup: tuple[str, ...] = ()
    """Shell lines run before each job starts (``module load cuda``)."""

    @property
    def tasks_per_node(self) -> int:
        """Training processes per node: one per GPU, else ``cpu_processes_per_node`` (at least one)."""
        return self.gpus_per_node or max(1, self.cpu_processes_per_node)


def load_profile(name_or_path: str) -> SlurmProfile:
    """The profile ``slurm/<name>.toml``, or the TOML file at ``name_or_path``."""
    path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
        raise UserError(f"Slurm profile {name_or_path!r} is neither a file nor one of {PROFILE_DIR}: {known}")
    # Same checks and messages as run configs: unknown keys (with a suggestion) and bad types.
    profile = cfg.apply(SlurmProfile(), cfg.load_toml(path), str(path))
    minimums = {"nodes": 1, "gpus_per_node": 0, "cpu_processes_per_node": 0, "cpus_per_task": 1, "mem_gb": 0}
    for key, low in {**minimums, "time_min": 1, "max_timeouts": 0, "array_parallelism": 1}.items():
        if getattr(profile, key) < low:
            raise UserError(f"{path}: {key} = {getattr(profile, key)} must be >= {low}")
    if profile.gpus_per_node and profile.cpu_processes_per_node:
        raise UserError(f"{path}: cpu_processes_per_node is for nodes without GPUs; with gpus_per_node, leave it out")
    return profile


class TrainJob(submitit.helpers.Checkpointable):
    """What one array task runs: train (or resume) and evaluate the run folder ``run_dir``.

    Runs in every task of the job; with several tasks (GPUs), they form one DDP process group.
    A requeued job starts here again and resumes from the folder's checkpoint.
    """

    def __init__(self, run_dir: str, preset: str, tta: bool, workdir: str, official_checkpoint: str = "") -> None:
        self.run_dir = run_dir
        self.preset = preset
        self.tta = tta
        self.workdir = workdir
        """The submitter's working directory: a relative ``data.root`` is relative to it."""
        # Not named ``checkpoint``: that is submitit's requeue hook, the method below.
        self.official_checkpoint = official_checkpoint
        """Evaluation only: the official checkpoint to import and evaluate instead of training."""

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
        run = RunDir(self.run_dir)
        if env.global_rank == 0:
            info = run.info()
            code = str(Path(atssrepro.__file__).resolve().parents[1])  # the snapshot
            requeues = max(info.get("requeues", 0), restarts)
            run.set_state(info.get("state", "pending"), slurm_node=env.hostname, code=code, requeues=requeues)
        console = Console(stderr=True, force_terminal=False)
        requeue_signal = _RequeueSignal()
        try:
            if self.official_checkpoint:
                self._import_and_evaluate(run, console)
            else:
                execute(run.read_config(), run, self.preset, console)
            if self.tta:
                self._evaluate_tta(run, console)
        except BaseException:
            # Stopped by the requeue signal, or by the SIGTERM that Slurm may send with it (the
            # training loop stops on either): requeue, resume later.
            if requeue_signal.wait():
                requeue_signal.requeue()  # on rank 0: checkpoint(), scontrol requeue, exit
            raise
        finally:
            distributed.destroy()

    def _import_and_evaluate(self, run: RunDir, console: Console) -> None:
        """An evaluation-only run: ``atssrepro import official`` then ``atssrepro eval`` of the run folder."""
        from atssrepro.engine.official_import import import_official_checkpoint

        distributed.init_from_env()
        if distributed.is_main() and not run.checkpoint_path.exists():
            import_official_checkpoint(Path(self.official_checkpoint), run.read_config(), run.path)
        distributed.barrier()
        if not run.metrics_path.exists():
            evaluate_run(run.path, console)

    def _evaluate_tta(self, run: RunDir, console: Console) -> None:
        """Multi-scale testing of the trained run, as ``atssrepro eval RUN --tta``."""
        if not RunDir(run.path, tta=True).metrics_path.exists():
            evaluate_run(run.path, console, tta=True)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on rank 0 before it requeues the job. The run folder holds the latest
        checkpoint, which the next start resumes from: record the requeue, resubmit this same job.
        (Requeues without this call, after a node failure, are counted when the job starts again.)"""
        run = RunDir(self.run_dir)
        requeues = run.info().get("requeues", 0) + 1
        run.set_state("pending", requeues=requeues, message="requeued by Slurm (preemption or time limit)")
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


def _job(run: PlannedRun, store: Store, workdir: str) -> TrainJob:
    official = str(run.checkpoint.resolve()) if run.checkpoint else ""
    return TrainJob(str(store.run(run.run_id).path.resolve()), run.preset, run.tta, workdir, official)


def rendezvous_port(job_id: str, restarts: int) -> int:
    """The MASTER_PORT of a job's DDP rendezvous: the same on all its tasks, and another one after
    each requeue, so that a restarted job never meets the store left over by its previous start."""
    return 20000 + zlib.crc32(f"{job_id}/{restarts}".encode()) % 40000


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
        fetch_pretrained(runs, store, force)
        outcomes: dict[str, Outcome] = {}
        job_ids = {run.run_id: store.info(run.run_id).get("slurm_job_id", "") for run in runs}
        queued = live_jobs(job_ids.values())
        pending = []
        for run in runs:
            job_id = job_ids[run.run_id]
            if job_id in queued:
                outcomes[run.run_id] = Outcome(run.run_id, "queued", f"job {job_id} ({queued[job_id].lower()})")
            elif store.run(run.run_id).path.exists() and store.run(run.run_id).is_locked():
                outcomes[run.run_id] = Outcome(run.run_id, "busy", "being trained by another process")
            elif not prepare(run, store, force):
                outcomes[run.run_id] = Outcome(run.run_id, "skipped", "already done")
            elif (missing := missing_checkpoint(run, store)) is not None:
                outcomes[run.run_id] = missing
            else:
                pending.append(run)
        if pending:
            for run, job in zip(pending, self._submit(pending, store)):
                outcomes[run.run_id] = Outcome(run.run_id, "submitted", f"job {job.job_id}")
        for index, run in enumerate(runs, 1):
            outcome = outcomes[run.run_id]
            rows = ", ".join(map(str, run.rows))
            self.console.print(f"[{index}/{len(runs)}] {run.run_id} ({rows}): {outcome.state}, {outcome.message}")
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
                jobs = [executor.submit(_job(run, store, workdir)) for run in runs]
        except submitit.core.utils.FailedJobError as e:
            raise UserError(f"sbatch refused the jobs: {'; '.join(str(e).strip().splitlines())}") from None
        for run, job in zip(runs, jobs):
            store.run(run.run_id).set_state(
                "pending", slurm_job_id=job.job_id, slurm_log=str(job.paths.stderr), snapshot=str(snapshot),
                requeues=0, message="",
            )  # fmt: skip
        # Released only now, so that no job can write its run.json before the job id is in it.
        _slurm_command(["scontrol", "release", jobs[0].job_id.split("_")[0]])
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
        jobs = {o.run_id: store.info(o.run_id)["slurm_job_id"] for o in outcomes if o.state in ("submitted", "queued")}
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
            if state not in ("done", "failed", "diverged"):
                slurm_state = states[job_id].state if job_id in states else "ended"
                state = "interrupted" if slurm_state == "CANCELLED" else "failed"
                message = f"job {job_id} {slurm_state.lower()}; see {info.get('slurm_log')}"
                store.run(outcome.run_id).set_state(state, message=message)
                info = store.info(outcome.run_id)
            final.append(Outcome(outcome.run_id, state, "" if state == "done" else info.get("message", "")))
        return final


def merged_state(run_state: str, slurm_state: str | None, requeues: int = 0) -> str:
    """What ``atssrepro status`` calls a run that was submitted to Slurm.

    ``run_state`` is the run folder's (``Store.state``), ``slurm_state`` its job's in squeue or
    sacct (None when Slurm no longer knows the job). A finished run keeps its own state; otherwise
    Slurm knows best: pending (requeued after a preemption or a time limit), running, cancelled,
    or failed when the job ended without the run finishing (out of memory, node failure, time).
    """
    if run_state in ("done", "diverged") or slurm_state is None:
        return run_state
    if slurm_state in ("PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "PREEMPTED", "SUSPENDED"):
        return "requeued" if requeues or slurm_state != "PENDING" else "pending"
    if slurm_state == "CANCELLED":
        return "cancelled"
    if slurm_state in ENDED:
        return run_state if run_state == "failed" or slurm_state == "COMPLETED" else "failed"
    return "running"  # RUNNING, CONFIGURING, COMPLETING, STAGE_OUT, SIGNALING, ...


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
        _slurm_command(["scancel", *ids])


def _slurm_command(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise UserError(f"{command[0]} not found: Slurm is not installed here")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}")
