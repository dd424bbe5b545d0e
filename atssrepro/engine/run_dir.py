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
from typing import Any

from atssrepro import config as cfg
from atssrepro.engine.run_records import (
    CorruptRecord,
    LogRecord,
    MetricsRecord,
    RunRecord,
    log_windows,
    read_log,
    read_record,
)
from atssrepro.engine.run_state import RECORDED, RunState
from atssrepro.errors import UserError
from atssrepro.fileio import make_dirs, write_json, write_text


class RunBusy(UserError):
    """Another live process holds the run's lock: it trains or evaluates the run right now."""


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
        """Create the folder for ``config``, or check that an existing one holds the same config.
        ``preset`` is recorded in run.json: the name of the run's preset, or ``import``. A folder
        whose run never started training (:meth:`never_trained`) is taken over by another config:
        the corrected command after a failed start reuses it."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path}: exists and is not a folder")
        if self.config_path.exists():
            existing = self.read_config()
            if cfg.config_id(existing) == cfg.config_id(config):
                return
            if not self.never_trained():
                raise UserError(
                    f"{self.path} holds another run (config {cfg.config_id(existing)}, this one is "
                    f"{cfg.config_id(config)}); pick another --out or delete that folder"
                )
            self.state_path.unlink(missing_ok=True)  # the run taking the folder over starts its own record
        make_dirs(self.path)
        write_text(self.config_path, cfg.to_toml(config))
        self.set_state(RunState.PENDING, id=cfg.config_id(config), preset=preset)

    def never_trained(self) -> bool:
        """Whether the folder holds nothing but a run that never started training: its config and a
        run.json saying pending or failed, without a Slurm job, a checkpoint, a log, metrics or a
        process holding it."""
        if any(path.exists() for path in (self.checkpoint_path, self.log_path, self.metrics_path)):
            return False
        try:
            record = self.record()
        except CorruptRecord:
            return False
        failed_at_start = record is not None and record.state in (RunState.PENDING, RunState.FAILED)
        return failed_at_start and not record.slurm_job_id and not self.is_locked()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock: one process at a time trains or evaluates a run folder.

        The lock is a POSIX record lock (``lockf``) on ``.lock``: the kernel drops it when its
        process dies, so a killed run never leaves a stale lock behind, and unlike ``flock`` it is
        not inherited by forked DataLoader workers, which outlive a killed trainer by seconds.
        """
        make_dirs(self.path)
        with open(self.lock_path, "a") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise RunBusy(f"{self.path} is being trained by another process; wait for it or stop it") from None
            try:
                yield
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)

    def is_locked(self) -> bool:
        """Whether a live process holds the run's lock right now."""
        try:
            with self.lock():
                return False
        except RunBusy:
            return True

    def read_config(self) -> cfg.Config:
        if not self.config_path.is_file():
            raise UserError(f"{self.path} is not a run folder (no config.toml)")
        return cfg.from_dict(cfg.load_toml(self.config_path), str(self.config_path))

    def info(self) -> dict[str, Any]:
        """run.json as a dict ({} before the run starts), every field checked (:class:`RunRecord`);
        keys it does not declare are kept. A corrupt one is a :class:`CorruptRecord` naming it."""
        read = read_record(RunRecord, self.state_path)
        return {} if read is None else read[1]

    def record(self) -> RunRecord | None:
        """run.json, typed; None before the run starts. Raises CorruptRecord."""
        read = read_record(RunRecord, self.state_path)
        return None if read is None else read[0]

    def metrics(self) -> dict[str, Any] | None:
        """metrics.json (``metrics_tta.json``) as a dict, every field checked (:class:`MetricsRecord`);
        None before the run is evaluated. Raises CorruptRecord."""
        read = read_record(MetricsRecord, self.metrics_path)
        return None if read is None else read[1]

    def log(self) -> list[LogRecord]:
        """The training windows of log.jsonl as the run stands (``run_records.read_log``). Raises CorruptRecord."""
        return read_log(self.log_path)

    def corruption(self) -> str | None:
        """The one-line message naming the first unreadable or malformed record of the run (run.json,
        metrics.json, log.jsonl) and its field, or None. A killed run may leave half a last line in
        log.jsonl: that is fine."""
        try:
            self.info()
            self.metrics()
            self.log()
        except CorruptRecord as e:
            return str(e)
        return None

    def set_state(self, state: RunState, **fields: Any) -> None:
        """Record ``state`` (one of ``RECORDED``) and ``fields`` in run.json; a field given as None is removed."""
        if state not in RECORDED:
            raise ValueError(f"run.json records no state {state!r}")
        info = self.info()
        info.update(fields, state=RunState(state).value, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(self.state_path, {key: value for key, value in info.items() if value is not None})

    def resume_log(self, iteration: int) -> None:
        """Drop from log.jsonl, atomically, the windows after ``iteration``, where a resumed start
        takes over: an earlier start logged them after its last checkpoint and this one logs them
        again, so the log (and what ``status`` shows) never runs ahead of the run. A half last
        line of a killed start goes too; the lines kept are kept as written. Raises CorruptRecord."""
        windows = log_windows(self.log_path)
        if self.log_path.exists():
            write_text(self.log_path, "".join(line + "\n" for record, line in windows if record.iter <= iteration))

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
