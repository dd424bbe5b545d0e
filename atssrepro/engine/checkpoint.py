"""Training checkpoints: everything needed to continue a run bit-for-bit, written atomically."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from atssrepro.errors import UserError
from atssrepro.fileio import atomic_write


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, dicts, lists and plain values only) to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(state, f), binary=True)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a checkpoint can never execute code.

    An empty, truncated or foreign file, or one without the entries a checkpoint has, is one line
    naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint file; pass checkpoint.pt or its run folder")
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise EOFError("the file is empty")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError, KeyError, TypeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{path}: corrupt or not an atssrepro checkpoint ({reason}); delete it to start over") from None
    expected = {"model": dict, "config": dict, "iteration": int, "num_classes": int}
    wrong = [
        key for key, kind in expected.items() if not isinstance(state, dict) or not isinstance(state.get(key), kind)
    ]
    if wrong:
        raise UserError(
            f"{path}: not an atssrepro checkpoint (no valid {', '.join(wrong)} entry); delete it or pass another file"
        )
    return state


def restore(path: Path, load_state: Callable[[], None]) -> None:
    """Run ``load_state`` (``module.load_state_dict(...)`` calls) for the checkpoint ``path``; a state
    that does not fit the model is one line naming ``path``."""
    try:
        load_state()
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        reason = "; ".join(lines[:2])[:300] or type(e).__name__
        raise UserError(
            f"{path}: its weights or training state do not fit this model ({reason}); "
            "it was saved by another config or another version: delete it or pass the matching checkpoint"
        ) from None
