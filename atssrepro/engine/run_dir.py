"""The folder of one run: its resolved config, state, log, checkpoint, detections and metrics.

Every file is written atomically, so a killed run leaves either the previous version of a file
or the new one, and a folder that the next start resumes from.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atssrepro import config as cfg
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
        ``preset`` is recorded in run.json: the name of the run's preset, or ``import``."""
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
        make_dirs(self.path)
        write_text(self.config_path, cfg.to_toml(config))
        self.set_state(RunState.PENDING, id=cfg.config_id(config), preset=preset)

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
        """run.json ({} before the run starts); a corrupt one is a UserError naming it."""
        if not self.state_path.is_file():
            return {}
        problem = self.corruption()
        if problem:
            raise UserError(problem)
        return json.loads(self.state_path.read_text(encoding="utf-8"))

    def corruption(self) -> str | None:
        """What is wrong with the first unreadable or malformed record of the run (run.json,
        metrics.json, log.jsonl), or None. A killed run may leave half a last line in log.jsonl: that is fine."""
        fix = f"delete {self.path} or train it again from scratch with --force"
        for path, problem in (
            (self.state_path, _json_object_problem(self.state_path, "state", str, [s.value for s in RECORDED])),
            (self.metrics_path, _json_object_problem(self.metrics_path, "stats", dict)),
            (self.log_path, _log_problem(self.log_path)),
        ):
            if problem:
                return f"{path} is corrupt ({problem}); {fix}"
        return None

    def set_state(self, state: RunState, **fields: Any) -> None:
        """Record ``state`` (one of ``RECORDED``) and ``fields`` in run.json; a field given as None is removed."""
        if state not in RECORDED:
            raise ValueError(f"run.json records no state {state!r}")
        info = self.info()
        info.update(fields, state=RunState(state).value, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(self.state_path, {key: value for key, value in info.items() if value is not None})

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _text(path: Path) -> str | None:
    """The file's UTF-8 text, None when it does not exist; ValueError for binary content."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as e:
        raise ValueError(f"binary content at byte {e.start}") from None
    except OSError as e:
        raise ValueError(e.strerror or type(e).__name__) from None


def _json_object_problem(path: Path, key: str, kind: type, values: list | None = None) -> str | None:
    """Why ``path`` is not a JSON object with ``key`` of type ``kind`` (and one of ``values``, when
    given); None when fine or absent."""
    try:
        text = _text(path)
        if text is None:
            return None
        data = json.loads(text)
    except ValueError as e:  # JSONDecodeError is one
        return str(e).splitlines()[0] if str(e) else "not JSON"
    if not isinstance(data, dict) or not isinstance(data.get(key), kind):
        return f"not a JSON object with {key!r}"
    if values is not None and data[key] not in values:
        return f"{key} {data[key]!r} is none of {', '.join(values)}"
    return None


def _log_problem(path: Path) -> str | None:
    """Why log.jsonl is unreadable: binary, or a complete line that is not a JSON object."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _log_problem_of_version(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _log_problem_of_version(path: Path, mtime_ns: int, size: int) -> str | None:
    """``_log_problem`` of one version of the file: status and report ask several times per run."""
    try:
        text = _text(path)
    except ValueError as e:
        return str(e)
    lines = (text or "").splitlines()
    for number, line in enumerate(lines[:-1] if not (text or "").endswith("\n") else lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            return f"line {number} is not JSON"
        if not isinstance(record, dict):
            return f"line {number} is not a JSON object"
    return None
