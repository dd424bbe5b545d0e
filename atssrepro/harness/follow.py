"""What the local queue shows while its runs train: each run's latest log window, as it comes.

The runs train in processes of their own whose output goes to ``<run>/train.log``; the queue
follows each one's ``log.jsonl`` instead (a few bytes a second) and shows, on a terminal, a live
line per running run (its iteration of all, its loss), or elsewhere (a file, a pipe, CI) a plain
line per log window.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from atssrepro.engine.run_records import CorruptRecord, LogRecord, log_record


class QueueView:
    """The live lines of the runs being followed (on a terminal); a context manager."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar: Progress | None = None
        if console.is_terminal:
            status = TextColumn("{task.fields[status]}")
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                status,
                console=console,
                transient=True,
            )

    def __enter__(self) -> QueueView:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.stop()

    def follow(self, label: str, log_path: Path, iterations: int) -> RunFollower:
        """Follow the windows that the run's start now writes to ``log_path`` (not its earlier starts')."""
        return RunFollower(self, label, log_path, iterations)


class RunFollower:
    """One run's log.jsonl, read from where it ended when the run started: :meth:`poll` shows the
    windows written since the last call; :meth:`close` the last ones, and ends the run's line."""

    def __init__(self, view: QueueView, label: str, log_path: Path, iterations: int) -> None:
        self.view, self.label, self.log_path, self.iterations = view, label, log_path, iterations
        # Where the log ended at launch. A resumed start replaces the file once, before its first
        # window, without the windows after its checkpoint (RunDir.resume_log): the lines it keeps
        # are lines of the launch's file, the ones it appends are new.
        self._inode, self._offset, self._earlier = 0, 0, frozenset[bytes]()
        if log_path.is_file():
            launch = log_path.read_bytes()
            self._inode, self._offset = log_path.stat().st_ino, len(launch)
            self._earlier = frozenset(launch.splitlines())
        self._task: TaskID | None = None
        if view.bar is not None:
            self._task = view.bar.add_task(label, total=iterations, status="starting")

    def poll(self) -> None:
        for record in self._new_windows():
            self._show(record)

    def close(self) -> None:
        self.poll()
        if self._task is not None and self.view.bar is not None:
            self.view.bar.remove_task(self._task)

    def _new_windows(self) -> list[LogRecord]:
        """The complete lines appended since the last look; a line that is no window is passed over
        (``status`` names a corrupt log)."""
        try:
            with open(self.log_path, "rb") as log:
                inode = os.fstat(log.fileno()).st_ino
                if inode != self._inode:  # replaced by the resumed start: read it again from the top
                    self._inode, self._offset = inode, 0
                log.seek(self._offset)
                appended = log.read()
        except FileNotFoundError:
            return []
        complete = appended[: appended.rfind(b"\n") + 1]
        self._offset += len(complete)
        windows = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            if line.encode("utf-8") in self._earlier:
                continue
            try:
                windows.append(log_record(line, self.log_path, 0))
            except CorruptRecord:
                continue
        return windows

    def _show(self, record: LogRecord) -> None:
        trained = "; trained, evaluating" if record.iter >= self.iterations else ""
        if self._task is not None and self.view.bar is not None:
            status = f"loss {record.loss:.3f}" + (", evaluating" if trained else "")
            self.view.bar.update(self._task, completed=record.iter, status=status)
        else:
            line = f"{self.label}: iteration {record.iter}/{self.iterations}, loss {record.loss:.3f}{trained}"
            self.view.console.print(line, highlight=False, markup=False, soft_wrap=True)
