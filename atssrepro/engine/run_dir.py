"""The folder of one run: its resolved config, state, log, checkpoint, detections and metrics.

Every file is written atomically, so a killed run leaves either the previous version of a file
or the new one, and a folder that the next start resumes from.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from atssrepro import config as cfg
from atssrepro.errors import UserError
from atssrepro.fileio import write_json, write_text

State = Literal["pending", "running", "done", "failed", "diverged", "interrupted"]


class RunDir:
    def __init__(self, path: str | Path, tta: bool = False) -> None:
        """``tta`` names the detections and metrics of multi-scale testing apart from the single-scale ones."""
        self.path = Path(path)
        suffix = "_tta" if tta else ""
        self.config_path = self.path / "config.toml"
        self.state_path = self.path / "run.json"
        self.log_path = self.path / "log.jsonl"
        self.checkpoint_path = self.path / "checkpoint.pt"
        self.detections_path = self.path / f"detections{suffix}.json"
        self.metrics_path = self.path / f"metrics{suffix}.json"
        self.lock_path = self.path / ".lock"

    def init(self, config: cfg.Config, preset: str) -> None:
        """Create the folder for ``config``, or check that an existing one holds the same config."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path}: exists and is not a folder")
        if self.config_path.exists():
            existing = self.read_config()
            if cfg.config_id(existing) != cfg.config_id(config):
                raise UserError(
                    f"{self.path} holds another run (config {cfg.config_id(existing)}, this one is "
                    f"{cfg.config_id(config)}); pick another --out or delete that folder"
                )
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.config_path, cfg.to_toml(config))
        self.set_state("pending", id=cfg.config_id(config), preset=preset)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock: one process at a time trains or evaluates a run folder.

        The lock is a POSIX record lock (``lockf``) on ``.lock``: the kernel drops it when its
        process dies, so a killed run never leaves a stale lock behind, and unlike ``flock`` it is
        not inherited by forked DataLoader workers, which outlive a killed trainer by seconds.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise UserError(f"{self.path} is being trained by another process; wait for it or stop it") from None
            try:
                yield
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)

    def is_locked(self) -> bool:
        """Whether a live process holds the run's lock right now."""
        try:
            with self.lock():
                return False
        except UserError:
            return True

    def read_config(self) -> cfg.Config:
        if not self.config_path.is_file():
            raise UserError(f"{self.path} is not a run folder (no config.toml)")
        return cfg.from_dict(cfg.load_toml(self.config_path), str(self.config_path))

    def info(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            return {}
        return json.loads(self.state_path.read_text())

    def set_state(self, state: State, **fields: Any) -> None:
        """Record ``state`` and ``fields`` in run.json; a field given as None is removed."""
        info = self.info()
        info.update(fields, state=state, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(self.state_path, {key: value for key, value in info.items() if value is not None})

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
