"""The ``atssrepro`` command line: thin wrappers that parse, call one function, and print.

``common.py`` holds the apps and shared options; ``run_commands.py`` the commands of one run,
``table_commands.py`` those of the paper's tables. Importing them registers their commands on ``app``.
"""

from __future__ import annotations

import sys

from rich.text import Text

from atssrepro.cli import run_commands, table_commands
from atssrepro.cli.common import app, console
from atssrepro.errors import UserError, one_line

__all__ = ["UserError", "app", "main", "run_commands", "table_commands"]


def main() -> None:
    """Entry point: Typer handles usage errors (exit 2); a UserError becomes one line and exit 2."""
    try:
        app()
    except UserError as e:
        # The message as it is: it may hold [brackets], paths, a user's values (atssrepro/terminal.py).
        console.print(Text.assemble(("error:", "bold red"), " ", one_line(e)))
        sys.exit(2)
