"""The one exception type that reaches the user as a one-line message, and warnings for input that is skipped."""

import difflib
import sys
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: a malformed file, an unknown key, a missing path.

    The CLI prints ``str(error)`` on one line and exits with code 2, without a traceback.
    The message names the file, key or value at fault and says how to fix it.
    """


def one_line(error: BaseException) -> str:
    """``error`` as the one line a user reads, ``UserError`` messages without their type.

    An exception raised in a DataLoader worker reaches the main process re-raised with the worker's
    whole traceback as its message; its last line holds the original type and message.
    """
    text = str(error).strip()
    if "\nOriginal Traceback" in text:
        text = text.splitlines()[-1]
        return text.removeprefix(f"{UserError.__module__}.{UserError.__name__}: ")
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"


def warn(message: str) -> None:
    """Tell the user, in one line on stderr, about input that is skipped (and counted) rather than refused."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to a mistyped ``word``, or ``""``: a close spelling,
    else a choice that holds the word's letters in order from its first (``md``: ``markdown``)."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    if not close and word:
        close = [c for c in choices if c.startswith(word[0]) and _in_order(word, c)][:1]
    return f"; did you mean {close[0]!r}?" if close else ""


def _in_order(letters: str, text: str) -> bool:
    rest = iter(text)
    return all(letter in rest for letter in letters)
