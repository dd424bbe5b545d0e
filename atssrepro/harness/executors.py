"""The local queue: planned runs packed onto this machine's device slots.

:class:`QueueExecutor` runs each run in its own process (``python -m atssrepro.harness.worker``,
through torchrun for DDP), which executes it with ``runner.execute_job``, its output appended to
``<run>/train.log``; the terminal shows where that log is and each run's latest iteration and loss
(``harness/follow.py``). On Ctrl-C it passes the signal on to those processes (which checkpoint their
last iteration), waits for them and raises KeyboardInterrupt. The preparation both executors share
(:func:`prepare`, :func:`missing_checkpoint`, :func:`fetch_pretrained`, :func:`check_batch_split`)
is here too, but for ``store.check_inputs``, which ``run`` calls before it imports torch;
``harness/slurm.py`` holds the other executor.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.console import Console

from atssrepro import config as cfg
from atssrepro.engine.run_dir import RunBusy
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError
from atssrepro.harness.follow import QueueView
from atssrepro.harness.gpus import parse_gpus
from atssrepro.harness.plan import PlannedRun
from atssrepro.harness.runner import Job, Outcome
from atssrepro.harness.status import outcome_line
from atssrepro.harness.store import Store, check_inputs
from atssrepro.model import pretrained


def torchrun(processes: int) -> list[str]:
    """The launcher of a DDP run with ``processes`` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]


def job_of(run: PlannedRun, store: Store) -> Job:
    """The job that executes ``run`` in its folder of ``store``."""
    official = str(run.checkpoint.resolve()) if run.checkpoint else ""
    return Job(str(store.run(run.run_id).path.resolve()), run.preset.name, run.tta, official)


def worker_command(job: Job, outcome_file: Path, launcher: Sequence[str]) -> list[str]:
    """Execute ``job`` in a process of its own, its outcome written to ``outcome_file``.

    ``launcher`` starts the Python module: the interpreter, or :func:`torchrun` for DDP.
    """
    return [*launcher, "-m", "atssrepro.harness.worker", json.dumps(job.to_dict()), str(outcome_file)]


def missing_checkpoint(run: PlannedRun, store: Store) -> Outcome | None:
    """An evaluation-only run whose official checkpoint is not there: recorded as failed, with the
    file to fetch, in its run folder (which ``status`` shows); None when there is nothing missing."""
    if run.checkpoint is None or run.checkpoint.is_file():
        return None
    message = (
        f"{run.checkpoint.name} not found in {run.checkpoint.parent}: download this official checkpoint "
        "from the model zoo of github.com/sfzhang15/ATSS (README) into --zoo-dir"
    )
    store.run(run.run_id).set_state(RunState.FAILED, message=message)
    return Outcome(run.run_id, RunState.FAILED, message)


def fetch_pretrained(runs: Sequence[PlannedRun], store: Store, force: bool) -> None:
    """Find, or download into their cache, the pretrained weights of every run that will start
    training from them, before any run starts or is submitted: a missing file is a one-line error
    now, not a failed job after its wait in a queue. Runs that resume, are done or only evaluate
    need none."""
    needed = {
        (b.weights, b.name, b.style)
        for run in runs
        for b in [run.config.model.backbone]
        if run.checkpoint is None and (force or not store.run(run.run_id).checkpoint_path.exists())
    }
    for weights, name, style in sorted(needed):
        pretrained.locate(weights, name, style)


def prepare(run: PlannedRun, store: Store, force: bool) -> bool:
    """Create the run folder with its resolved config; False when there is nothing left to do."""
    folder = store.run(run.run_id)
    if force and folder.path.exists():
        shutil.rmtree(folder.path)
    folder.init(run.config, run.preset.name)
    done = folder.metrics_path.exists()
    return not (done and (not run.tta or store.run(run.run_id, tta=True).metrics_path.exists()))


@dataclass(frozen=True)
class Slot:
    """Devices that one run has to itself: GPU ids ("0", "1", ...) or CPU slots ("cpu0", "cpu1", ...)."""

    devices: tuple[str, ...]
    threads: int = 0
    """CPU threads of the run (OMP_NUM_THREADS); 0 leaves torch's default, all the cores."""

    def __str__(self) -> str:
        return ",".join(self.devices)

    def env(self) -> dict[str, str]:
        """This process's environment with only the slot's GPUs visible (none for a CPU slot)."""
        visible = "" if self.devices[0].startswith("cpu") else str(self)
        threads = {"OMP_NUM_THREADS": str(self.threads)} if self.threads else {}
        return {**os.environ, "CUDA_VISIBLE_DEVICES": visible, **threads}

    def launcher(self) -> list[str]:
        """One process on one device; DDP with one process per device on several."""
        return [sys.executable] if len(self.devices) == 1 else torchrun(len(self.devices))


def local_devices(gpus: str | None) -> list[str]:
    """The devices of the local queue: the ``--gpus`` list ("0,1,3"; "cpu0,cpu1" makes CPU slots),
    else every GPU this process may use, else one CPU slot."""
    if gpus is not None:
        return parse_gpus(gpus)
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        return ["cpu"]
    # Slot ids are set as CUDA_VISIBLE_DEVICES, so they must name the GPUs this process sees.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d.strip() for d in visible.split(",")][:count] if visible else [str(i) for i in range(count)]


def make_slots(devices: Sequence[str], gpus_per_run: int) -> list[Slot]:
    """Consecutive groups of ``gpus_per_run`` devices; devices left over stay idle."""
    if gpus_per_run < 1:
        raise UserError(f"--gpus-per-run {gpus_per_run}: needs at least 1")
    if len(devices) < gpus_per_run:
        raise UserError(f"--gpus-per-run {gpus_per_run} needs that many devices; got {', '.join(devices) or 'none'}")
    if len(set(devices)) < len(devices):
        raise UserError(f"--gpus {','.join(devices)}: a device is listed twice")
    if len({d.startswith("cpu") for d in devices}) > 1:
        raise UserError(f"--gpus {','.join(devices)}: GPU ids and CPU slots mixed")
    count = len(devices) // gpus_per_run
    # CPU slots share the cores: as many threads each as they have cores to themselves.
    threads = max(1, (os.cpu_count() or 1) // count) if devices[0].startswith("cpu") and count > 1 else 0
    return [Slot(tuple(devices[i * gpus_per_run : (i + 1) * gpus_per_run]), threads) for i in range(count)]


def check_batch_split(runs: Sequence[PlannedRun], processes: int, what: str) -> None:
    """Refuse, before anything starts, runs whose global batch ``processes`` processes cannot share
    in whole padding groups (``train.pad_group``)."""
    for run in runs:
        problem = cfg.batch_split_problem(run.config.train, processes)
        if problem is not None:
            rows = ", ".join(map(str, run.rows))
            raise UserError(f"run {run.run_id} ({rows}): {problem[0]} ({what}); {problem[1]}")


class Stopped(Exception):
    """The executor is being interrupted: no new process starts."""


class Children:
    """The executor's running subprocesses, so that Ctrl-C reaches each of them. Thread-safe."""

    WATCH_S = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping = False

    def call(
        self,
        command: list[str],
        log: IO[str],
        env: dict[str, str] | None = None,
        watch: Callable[[], None] | None = None,
    ) -> int:
        """Run ``command`` to its end with its output in ``log``; its exit code. ``watch`` is called
        every :attr:`WATCH_S` seconds while it runs.

        Raises:
            Stopped: :meth:`interrupt` was called before it started.
        """
        with self._lock:
            if self.stopping:
                raise Stopped
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            self._running.add(process)
        # A KeyboardInterrupt here leaves the process in the set, for interrupt() to stop.
        while True:
            try:
                code = process.wait(timeout=self.WATCH_S)
                break
            except subprocess.TimeoutExpired:
                if watch is not None:
                    watch()
        with self._lock:
            self._running.discard(process)
        return code

    def interrupt(self) -> None:
        """Pass Ctrl-C on to every running child and wait for them; start no new ones.

        A training process saves its last iteration first (the terminal may have sent it the
        same Ctrl-C already; a second one changes nothing).
        """
        with self._lock:
            self.stopping = True
            running = list(self._running)
        for process in running:
            process.send_signal(signal.SIGINT)
        for process in running:
            process.wait()


def run_one(
    run: PlannedRun,
    position: str,
    store: Store,
    force: bool,
    children: Children,
    view: QueueView,
    slot: Slot,
) -> Outcome:
    """Execute ``run`` on ``slot`` (train, or import and evaluate; then TTA if a row needs it);
    report on ``view``'s console where its log is, and its progress. The slot is noted as
    ``devices`` in the run's run.json. ``position`` prefixes the lines, e.g. "[3/8]".
    """
    console = view.console
    rows = ", ".join(map(str, run.rows))
    if not prepare(run, store, force):
        console.print(f"{position} {run.run_id} ({rows}): done already")
        return Outcome(run.run_id, RunState.SKIPPED, "already done")
    missing = missing_checkpoint(run, store)
    if missing is not None:
        console.print(f"{position} {run.run_id} ({rows}): failed {missing.message}", highlight=False)
        return missing
    folder = store.run(run.run_id)
    # Under the run's lock, so as not to write over a process training it (it then reports busy).
    with contextlib.suppress(RunBusy), folder.lock():
        folder.set_state(folder.info()["state"], devices=str(slot))
    doing = "training" if run.checkpoint is None else f"importing {run.checkpoint.name} and evaluating"
    train_log = folder.path / "train.log"
    line = f"{position} {run.run_id} ({rows}): {doing} on {slot}; its log: {train_log}"
    console.print(line, highlight=False, markup=False, soft_wrap=True)
    follower = view.follow(f"{position} {run.run_id}", folder.log_path, run.config.train.iterations)
    with tempfile.TemporaryDirectory(prefix="atssrepro-") as scratch:
        outcome_file = Path(scratch) / "outcome.json"
        command = worker_command(job_of(run, store), outcome_file, slot.launcher())
        try:
            with open(train_log, "a") as log:
                code = children.call(command, log, slot.env(), follower.poll)
        finally:
            follower.close()
        outcome = Outcome(run.run_id, RunState.DONE) if code == 0 else _failure(run, store, code, outcome_file)
    console.print(f"{position} {run.run_id}: {outcome_line(run, store, outcome.state, outcome.message)}")
    return outcome


def _failure(run: PlannedRun, store: Store, code: int, outcome_file: Path) -> Outcome:
    """The outcome of a worker that exited with ``code``: as it wrote it, else as the run folder says."""
    if outcome_file.is_file():
        record = json.loads(outcome_file.read_text(encoding="utf-8"))
        return Outcome(run.run_id, RunState(record["state"]), record["message"])
    folder = store.run(run.run_id)
    lines = (folder.path / "train.log").read_text().strip().splitlines()
    message = lines[-1] if lines else f"exit code {code}"
    state = store.info(run.run_id).get("state")  # as the run recorded it
    if state not in (RunState.FAILED, RunState.DIVERGED, RunState.INTERRUPTED):
        # Killed without a word (out of memory, SIGKILL): record it for `status`.
        state = RunState.FAILED
        folder.set_state(state, message=message)
    return Outcome(run.run_id, RunState(state), message)


class QueueExecutor:
    """Packs pending runs onto device slots: each run gets ``gpus_per_run`` devices of its own.

    The slots are consecutive groups of ``devices`` (GPU ids, or "cpu0", "cpu1", ... for CPU
    slots without a GPU). A slot trains one run at a time with ``CUDA_VISIBLE_DEVICES`` set to its
    GPUs, through torchrun (DDP) when it has several; when the run ends, done or failed, the slot
    takes the next pending run in plan order. Outcomes come back in plan order.
    """

    def __init__(self, console: Console, devices: Sequence[str], gpus_per_run: int = 1) -> None:
        self.console = console
        self.slots = make_slots(devices, gpus_per_run)

    def execute(self, runs: Sequence[PlannedRun], store: Store, force: bool = False) -> list[Outcome]:
        check_batch_split(runs, len(self.slots[0].devices), "--gpus-per-run")
        check_inputs(runs, store, force)
        fetch_pretrained(runs, store, force)
        pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(runs)):
            pending.put(index)
        outcomes: dict[int, Outcome] = {}
        children = Children()

        view = QueueView(self.console)

        def work(slot: Slot) -> None:
            """Train pending runs on ``slot`` until none is left or Ctrl-C stops the queue."""
            while not children.stopping:
                try:
                    index = pending.get_nowait()
                except queue.Empty:
                    return
                run, position = runs[index], f"[{index + 1}/{len(runs)}]"
                try:
                    outcomes[index] = run_one(run, position, store, force, children, view, slot)
                except Stopped:
                    return
                except Exception as e:  # a broken run folder fails its run, not the queue
                    outcomes[index] = Outcome(run.run_id, RunState.FAILED, f"{type(e).__name__}: {e}")

        self.console.print(f"{len(self.slots)} slot(s): {' | '.join(map(str, self.slots))}")
        threads = [threading.Thread(target=work, args=(slot,), name=f"slot {slot}") for slot in self.slots]
        with view:
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    thread.join()
            except KeyboardInterrupt:
                children.interrupt()
                for thread in threads:
                    thread.join()
                raise
        return [outcomes[index] for index in range(len(runs))]
