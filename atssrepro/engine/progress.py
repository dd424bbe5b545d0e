"""Progress of long work: a live bar on a terminal, plain lines in a log (Slurm job output, CI)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from atssrepro import distributed

Report = Callable[..., None]
"""``report(completed, status="")``: ``completed`` steps of the total are done."""


@contextlib.contextmanager
def progress(console: Console, label: str, total: int, every: int, completed: int = 0) -> Iterator[Report]:
    """Yield a ``report`` function for work of ``total`` steps, ``completed`` of them done already.

    On a terminal, a live bar. Elsewhere (stderr to a file or a pipe), where a bar shows nothing,
    a line ``label completed/total status`` each time ``every`` more steps are done, and at the
    end. Silent on the non-main processes of a DDP run.
    """
    if not distributed.is_main():
        yield lambda completed, status="": None
    elif console.is_terminal:
        columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(label, total=total, completed=completed, status="")
            yield lambda completed, status="": bar.update(task, completed=completed, status=status)
    else:
        printed = completed

        def report(completed: int, status: str = "") -> None:
            nonlocal printed
            if completed - printed >= every or completed == total:
                console.print(f"{label} {completed}/{total} {status}".rstrip(), highlight=False, soft_wrap=True)
                printed = completed

        yield report
