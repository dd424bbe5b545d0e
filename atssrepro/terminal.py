"""The consoles that every command prints through: text exactly as given, lines whole in a file.

Messages carry paths, ids, config values and the content of users' files, any of which may hold
``[brackets]`` or ``:colons:``; so Rich markup, emoji codes and highlighting are off, and styles
are given as ``Text`` objects. On a terminal Rich wraps long lines at word boundaries; when the
output is a file or a pipe nothing is wrapped (a log line stays one line, a table keeps its
natural width), so that grep, diff and a Slurm job's log see whole lines.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

UNWRAPPED_WIDTH = 100_000
"""The width of a console writing to a file or a pipe: wide enough that nothing wraps."""


def plain_console(stderr: bool = False, **options: Any) -> Console:
    """A console on stdout (or stderr) that prints text as given; see the module docstring."""
    console = Console(stderr=stderr, markup=False, emoji=False, highlight=False, **options)
    if not console.is_terminal:
        console.soft_wrap = True
        console.width = UNWRAPPED_WIDTH
    return console
