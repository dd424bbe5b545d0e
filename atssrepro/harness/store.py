"""The results store: ``results/<run id>/``, one folder per distinct run (see ``engine/run_dir.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atssrepro.engine.preflight import check_data, folder_problem
from atssrepro.engine.run_dir import RunDir
from atssrepro.engine.run_records import LogRecord
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError

if TYPE_CHECKING:
    from atssrepro.harness.plan import PlannedRun


class Store:
    """Read access to the run folders under ``root``; the runs themselves write their folders.

    A ``root`` that is a file (or lies under one) is refused at once, in one line: every command
    that takes ``--results`` reads or writes the store through this class."""

    def __init__(self, root: str | Path = "results") -> None:
        self.root = Path(root)
        problem = folder_problem(self.root, writable=False)
        if problem:
            raise UserError(f"--results {self.root}: {problem}; give the folder of the results store, e.g. results/")

    def check_writable(self) -> None:
        """Refuse a store that runs cannot be written into, before any run folder is written."""
        problem = folder_problem(self.root, writable=True)
        if problem:
            raise UserError(f"--results {self.root}: {problem}; give a folder you can write to")

    def run(self, run_id: str, tta: bool = False) -> RunDir:
        return RunDir(self.root / run_id, tta=tta)

    def info(self, run_id: str) -> dict[str, Any]:
        """run.json of the run, checked (``RunDir.info``); {} before it starts or when a record is corrupt."""
        folder = self.run(run_id)
        return {} if folder.corruption() else folder.info()

    def corruption(self, run_id: str) -> str | None:
        """The one-line message naming the run's corrupt file and field, or None."""
        return self.run(run_id).corruption() or self.run(run_id, tta=True).corruption()

    def refuse_corrupt(self, run_ids: Sequence[str]) -> None:
        """Stop before a run would write over a corrupt folder, unless --force asks to start it over."""
        for run_id in run_ids:
            problem = self.corruption(run_id)
            if problem:
                raise UserError(problem)

    def state(self, run_id: str) -> RunState:
        """The state run.json records, except: ``NOT_RUN`` when the folder does not exist,
        ``CORRUPT`` when one of its records is (see ``corruption``), and ``INTERRUPTED`` for a run
        marked running while no live process holds it (killed). Every state but done resumes from
        the run's checkpoint on the next start."""
        if self.corruption(run_id):
            return RunState.CORRUPT
        record = self.run(run_id).record()
        state = RunState.NOT_RUN if record is None else RunState(record.state)
        if state is RunState.RUNNING and not self.run(run_id).is_locked():
            return RunState.INTERRUPTED
        return state

    def metrics(self, run_id: str, tta: bool = False) -> dict[str, Any] | None:
        """metrics.json (``metrics_tta.json``) of the run, checked; None when absent or a record is corrupt."""
        return None if self.corruption(run_id) else self.run(run_id, tta).metrics()

    def last_log(self, run_id: str) -> LogRecord | None:
        """The run's latest training window (a killed run may have left half a line after it); None
        before the first, or when a record of the run is corrupt."""
        log = [] if self.corruption(run_id) else self.run(run_id).log()
        return log[-1] if log else None


def check_inputs(runs: Sequence[PlannedRun], store: Store, force: bool) -> None:
    """Refuse, before any run folder is written or any job submitted, runs that could not start: a
    results store that cannot be written, a dataset without the annotation files and image folders
    a run reads (``engine/preflight.py``; both splits for a run to train or resume, the validation
    split for one to evaluate only). Runs that are done need nothing."""
    store.check_writable()
    checked = set()
    for run in runs:
        splits = run.splits
        if not force and store.run(run.run_id).metrics_path.exists():
            evaluated = not run.tta or store.run(run.run_id, tta=True).metrics_path.exists()
            splits = () if evaluated else ("val",)
        if splits and (run.config.data, splits) not in checked:
            check_data(run.config.data, splits)
            checked.add((run.config.data, splits))
