"""The one exception type that reaches the user as a one-line message, and warnings for input that is skipped."""

import sys


class UserError(Exception):
    """Bad input from the user: a malformed file, an unknown key, a missing path.

    The CLI prints ``str(error)`` on one line and exits with code 2, without a traceback.
    The message names the file, key or value at fault and says how to fix it.
    """


def warn(message: str) -> None:
    """Tell the user, in one line on stderr, about input that is skipped (and counted) rather than refused."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
