"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """Bad input from the user: a malformed file, an unknown key, a missing path.

    The CLI prints ``str(error)`` on one line and exits with code 2, without a traceback.
    The message names the file, key or value at fault and says how to fix it.
    """
