"""TOML text and files read into plain data; every failure is one line naming the file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from atssrepro.errors import UserError


def load_toml_text(text: str, source: str = "<text>") -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source}: not valid TOML ({e})") from None
    except RecursionError:  # the parser recurses once per level of nested arrays or inline tables
        raise UserError(f"{source}: not valid TOML here (arrays or tables nested too deeply to read)") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a TOML text file (not UTF-8 at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    return load_toml_text(text, str(path))


def parse_value(text: str) -> Any:
    """A ``--set`` value is a TOML value (``7``, ``0.5``, ``[640, 800]``, ``true``) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise UserError(f"--set value {text[:40]!r}...: nested too deeply to read") from None
