"""The results store: ``results/<run id>/``, one folder per distinct run (see ``engine/run_dir.py``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atssrepro.engine.run_dir import RunDir
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError


class Store:
    """Read access to the run folders under ``root``; the runs themselves write their folders."""

    def __init__(self, root: str | Path = "results") -> None:
        self.root = Path(root)

    def run(self, run_id: str, tta: bool = False) -> RunDir:
        return RunDir(self.root / run_id, tta=tta)

    def info(self, run_id: str) -> dict[str, Any]:
        """run.json of the run ({} before it starts, or when a record of the run is corrupt)."""
        folder = self.run(run_id)
        return {} if folder.corruption() else folder.info()

    def corruption(self, run_id: str) -> str | None:
        """The one-line message naming the run's corrupt file, or None."""
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
        state = RunState(self.info(run_id).get("state", RunState.NOT_RUN))
        if state is RunState.RUNNING and not self.run(run_id).is_locked():
            return RunState.INTERRUPTED
        return state

    def metrics(self, run_id: str, tta: bool = False) -> dict[str, Any] | None:
        path = self.run(run_id, tta).metrics_path
        if not path.is_file() or self.run(run_id, tta).corruption():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def last_log(self, run_id: str) -> dict[str, Any]:
        """The last complete line of log.jsonl (a killed run may have left half a line)."""
        path = self.run(run_id).log_path
        if not path.is_file() or self.run(run_id).corruption():
            return {}
        for line in reversed(path.read_text(encoding="utf-8").splitlines()):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                return record
        return {}
