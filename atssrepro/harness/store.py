"""The results store: ``results/<run id>/``, one folder per distinct run (see ``engine/run_dir.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atssrepro.engine.run_dir import RunDir

NOT_RUN = "not run"


class Store:
    """Read access to the run folders under ``root``; the runs themselves write their folders."""

    def __init__(self, root: str | Path = "results") -> None:
        self.root = Path(root)

    def run(self, run_id: str, tta: bool = False) -> RunDir:
        return RunDir(self.root / run_id, tta=tta)

    def info(self, run_id: str) -> dict[str, Any]:
        """run.json of the run ({} before it starts)."""
        return self.run(run_id).info()

    def state(self, run_id: str) -> str:
        """pending, running, done, failed, diverged, interrupted (stopped by a signal, or marked
        running while no live process holds it: killed), or "not run" when the folder does not
        exist. Every state but done resumes from the run's checkpoint on the next start."""
        state = self.info(run_id).get("state", NOT_RUN)
        if state == "running" and not self.run(run_id).is_locked():
            return "interrupted"
        return state

    def metrics(self, run_id: str, tta: bool = False) -> dict[str, Any] | None:
        path = self.run(run_id, tta).metrics_path
        return json.loads(path.read_text()) if path.is_file() else None

    def last_log(self, run_id: str) -> dict[str, Any]:
        """The last complete line of log.jsonl (a killed run may have left half a line)."""
        path = self.run(run_id).log_path
        if not path.is_file():
            return {}
        for line in reversed(path.read_text().splitlines()):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        return {}
