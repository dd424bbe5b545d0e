"""The records of a run folder, read through one typed reader: ``run.json`` (:class:`RunRecord`),
``metrics.json`` (:class:`MetricsRecord`) and each line of ``log.jsonl`` (:class:`LogRecord`).

Every command that reads a run folder (``status``, ``report``, ``cancel``, ``run``, the executors)
reads these files here, so a record of the right JSON type but the wrong shape (a string where a
number belongs, a list for a job id, an unknown state) is one :class:`CorruptRecord` naming the file
and the field, never a traceback further on. Keys that a record does not declare are kept in the
file and ignored here (another version of atssrepro may add some). Imports no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from atssrepro import schema
from atssrepro.errors import UserError
from atssrepro.schema import ANY, at_least, between

STAT = between(-1, 1)
"""A COCO statistic: a fraction, -1 where COCOeval defines none."""


@dataclass(frozen=True)
class RunRecord:
    """``run.json``: the run's state and what its starts recorded. Fields are absent (at their
    default) until a start writes them."""

    state: Literal["pending", "running", "done", "failed", "diverged", "interrupted"]
    """One of ``run_state.RECORDED``."""
    id: Annotated[str, ANY] = ""
    preset: Annotated[str, ANY] = ""
    updated: Annotated[str, ANY] = ""
    message: Annotated[str, ANY] = ""
    """Why the run stopped (failed, diverged, interrupted), or a requeue."""
    traceback: Annotated[str, ANY] = ""
    started: Annotated[float, ANY] = 0.0
    finished: Annotated[float, ANY] = 0.0
    world_size: Annotated[int, at_least(1)] = 1
    device: Annotated[str, ANY] = ""
    threads: Annotated[int, at_least(1)] = 1
    devices: Annotated[str, ANY] = ""
    """The local queue's slot."""
    pretrained: Annotated[dict[str, Any], ANY] = field(default_factory=dict)
    slurm_job_id: Annotated[str, ANY] = ""
    slurm_log: Annotated[str, ANY] = ""
    slurm_node: Annotated[str, ANY] = ""
    snapshot: Annotated[str, ANY] = ""
    code: Annotated[str, ANY] = ""
    requeues: Annotated[int, at_least(0)] = 0
    checkpoint_iteration: Annotated[int, at_least(0)] = 0
    """Where an interrupted run resumes: its checkpoint's iteration (absent otherwise)."""
    imported_from: Annotated[str, ANY] = ""
    imported_sha256: Annotated[str, ANY] = ""


@dataclass(frozen=True)
class MetricsRecord:
    """``metrics.json`` (``metrics_tta.json``): an evaluation's COCO metrics (``engine/coco_eval.CocoMetrics``)."""

    stats: Annotated[dict[str, float], STAT]
    per_class_ap: Annotated[dict[str, float], STAT] = field(default_factory=dict)
    backend: Annotated[str, ANY] = ""
    num_images: Annotated[int, at_least(0)] = 0
    num_detections: Annotated[int, at_least(0)] = 0
    eval_batch_size: Annotated[int, at_least(1)] = 1
    world_size: Annotated[int, at_least(1)] = 1


@dataclass(frozen=True)
class LogRecord:
    """One line of ``log.jsonl``: a training window, its mean losses at its last iteration ``iter``."""

    iter: Annotated[int, at_least(1)]
    loss: Annotated[float, ANY]
    """The sum of the loss terms below."""
    cls: Annotated[float, ANY] = 0.0
    reg: Annotated[float, ANY] = 0.0
    centerness: Annotated[float, ANY] = 0.0
    lr: Annotated[float, at_least(0)] = 0.0
    img_per_s: Annotated[float, at_least(0)] = 0.0
    time: Annotated[float, ANY] = 0.0


class CorruptRecord(UserError):
    """A record of a run folder is unreadable or malformed; the message names the file and the field."""


def read_record(cls: type, path: Path) -> tuple[Any, dict[str, Any]] | None:
    """The record ``cls`` in the JSON file ``path`` and the file's whole object (undeclared keys
    too, which writers keep); None when there is no file.

    Raises:
        CorruptRecord: the file is not UTF-8 JSON, not an object, or a field breaks its type or rule.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CorruptRecord(_corrupt(path, e.strerror or type(e).__name__)) from None
    record, data = _read_version(cls, path, stat.st_mtime_ns, stat.st_size)
    return record, dict(data)  # a copy: writers update it


@functools.lru_cache(maxsize=1024)
def _read_version(cls: type, path: Path, mtime_ns: int, size: int) -> tuple[Any, dict[str, Any]]:
    """:func:`read_record` of one version of the file: ``status`` and ``report`` ask several times per run."""
    try:
        data = json.loads(_text(path))
    except ValueError as e:  # JSONDecodeError is one
        raise CorruptRecord(_corrupt(path, str(e).splitlines()[0] if str(e) else "not JSON")) from None
    return _typed(cls, data, path, "the file"), data


def read_log(path: Path) -> list[LogRecord]:
    """The training windows of ``log.jsonl`` as the run stands: a start that resumed from a
    checkpoint logs the windows after it again, and its records replace the earlier start's from
    that iteration on (3, 6, 9, 12, 9 reads as 3, 6, 9: the last 9). A killed run may leave half a
    last line: it is skipped. [] when there is no file.

    Raises:
        CorruptRecord: a complete line is not a JSON object of a window.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CorruptRecord(_corrupt(path, e.strerror or type(e).__name__)) from None
    return list(_log_version(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=1024)
def _log_version(path: Path, mtime_ns: int, size: int) -> tuple[LogRecord, ...]:
    return tuple(record for record, _ in log_windows(path))


def log_windows(path: Path) -> list[tuple[LogRecord, str]]:
    """:func:`read_log` uncached, each window with its line as written; [] when there is no file."""
    if not path.exists():
        return []
    text = _text(path)
    lines = text.splitlines()
    if not text.endswith("\n"):
        lines = lines[:-1]
    windows: list[tuple[LogRecord, str]] = []
    for number, line in enumerate(lines, start=1):
        record = log_record(line, path, number)
        while windows and windows[-1][0].iter >= record.iter:
            windows.pop()
        windows.append((record, line))
    return windows


def log_record(line: str, path: Path, number: int) -> LogRecord:
    """Line ``number`` of the log ``path`` as a :class:`LogRecord`; CorruptRecord naming it otherwise."""
    where = f"line {number}"
    try:
        data = json.loads(line)
    except ValueError:
        raise CorruptRecord(_corrupt(path, f"{where} is not JSON")) from None
    return _typed(LogRecord, data, path, where)


def _typed(cls: type, data: Any, path: Path, where: str) -> Any:
    if not isinstance(data, dict):
        raise CorruptRecord(_corrupt(path, f"{where} is not a JSON object"))
    quick = _plain(cls, data)
    if quick is not None:
        return quick
    declared = schema.fields(cls)
    try:
        return schema.read(cls, {k: v for k, v in data.items() if k in declared}, where)
    except UserError as e:
        problem = str(e).removeprefix(f"{where}: ")
        raise CorruptRecord(_corrupt(path, problem if where == "the file" else f"{where}: {problem}")) from None


def _plain(cls: type, data: dict[str, Any]) -> Any:
    """``cls`` from ``data`` when every declared value there is exactly of its field's type (``int``,
    ``float``, ``str``), not NaN, and keeps its rule: the common case, taken without the general walk
    of ``schema.read`` (a log holds thousands of lines). None otherwise: ``schema.read`` decides."""
    values = {}
    for name, f in schema.fields(cls).items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                return None
            continue
        value = data[name]
        if type(value) is not f.type or value != value or (f.rule is not None and f.rule.problem(value)):
            return None
        values[name] = value
    return cls(**values)


def _corrupt(path: Path, problem: str) -> str:
    fix = f"delete {path.parent} or train it again from scratch with --force"
    return f"{path} is corrupt ({problem}); {fix}"


def _text(path: Path) -> str:
    """The file's UTF-8 text; CorruptRecord for binary content or an unreadable file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptRecord(_corrupt(path, f"binary content at byte {e.start}")) from None
    except OSError as e:
        raise CorruptRecord(_corrupt(path, e.strerror or type(e).__name__)) from None
