"""Where planned runs execute. Every executor takes the same list of runs and reports outcomes;
this module has the local one, which trains runs one after the other in subprocesses.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console

from atssrepro.harness.plan import PlannedRun
from atssrepro.harness.store import Store


@dataclass
class Outcome:
    run_id: str
    state: str
    """done, skipped (already done), busy (another process holds it), failed or diverged."""
    message: str = ""


class Executor(Protocol):
    def execute(self, runs: Sequence[PlannedRun], store: Store, force: bool = False) -> list[Outcome]: ...


def train_command(run_dir: str) -> list[str]:
    """Train (or resume) and evaluate the prepared run folder ``run_dir``."""
    return [sys.executable, "-m", "atssrepro", "train", "--config", f"{run_dir}/config.toml", "--out", run_dir]


def tta_command(run_dir: str) -> list[str]:
    return [sys.executable, "-m", "atssrepro", "eval", run_dir, "--tta"]


def prepare(run: PlannedRun, store: Store, force: bool) -> bool:
    """Create the run folder with its resolved config; False when there is nothing left to do."""
    folder = store.run(run.run_id)
    if force and folder.path.exists():
        shutil.rmtree(folder.path)
    folder.init(run.config, run.preset)
    done = folder.metrics_path.exists()
    return not (done and (not run.tta or store.run(run.run_id, tta=True).metrics_path.exists()))


class LocalExecutor:
    """Runs one after the other, each in its own ``atssrepro train`` process, output in train.log.

    A failing run is recorded and the next one starts. A run whose folder another process is
    training is reported busy and left alone.
    """

    def __init__(self, console: Console) -> None:
        self.console = console

    def execute(self, runs: Sequence[PlannedRun], store: Store, force: bool = False) -> list[Outcome]:
        outcomes = []
        for index, run in enumerate(runs, 1):
            rows = ", ".join(map(str, run.rows))
            if not prepare(run, store, force):
                outcomes.append(Outcome(run.run_id, "skipped", "already done"))
                self.console.print(f"[{index}/{len(runs)}] {run.run_id} ({rows}): done already")
                continue
            self.console.print(f"[{index}/{len(runs)}] {run.run_id} ({rows}): training")
            outcome = self._run(run, store)
            self.console.print(f"[{index}/{len(runs)}] {run.run_id}: {outcome.state} {outcome.message}")
            outcomes.append(outcome)
        return outcomes

    def _run(self, run: PlannedRun, store: Store) -> Outcome:
        folder = store.run(run.run_id)
        commands = [train_command(str(folder.path))]
        if run.tta:
            commands.append(tta_command(str(folder.path)))
        with open(folder.path / "train.log", "a") as log:
            for command in commands:
                code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
                if code != 0:
                    return self._failure(run, store, code)
        return Outcome(run.run_id, "done")

    def _failure(self, run: PlannedRun, store: Store, code: int) -> Outcome:
        folder = store.run(run.run_id)
        lines = (folder.path / "train.log").read_text().strip().splitlines()
        message = lines[-1] if lines else f"exit code {code}"
        if "being trained by another process" in message:
            return Outcome(run.run_id, "busy", message)
        state = store.state(run.run_id)
        if state not in ("failed", "diverged"):
            # Killed without a word (out of memory, a signal): record it for `status`.
            state = "failed"
            folder.set_state("failed", message=message)
        return Outcome(run.run_id, state, message)
