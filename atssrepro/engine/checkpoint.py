"""Training checkpoints: everything needed to continue a run bit-for-bit, written atomically."""

from __future__ import annotations

import pickle
import random
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
    """Read a checkpoint with ``weights_only=True``: a checkpoint can never execute code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as e:
        raise UserError(
            f"{path}: corrupt or not an atssrepro checkpoint ({str(e).splitlines()[0]}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or not {"model", "config", "iteration"} <= state.keys():
        raise UserError(f"{path}: not an atssrepro checkpoint (needs model, config and iteration entries)")
    return state
