"""Training checkpoints: everything needed to continue a run bit-for-bit, written atomically and
checksummed, so that a file changed on disk is refused instead of evaluated or resumed."""

from __future__ import annotations

import hashlib
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


CHECKSUM = "sha256"
"""The entry holding :func:`digest` of the rest of the checkpoint."""
UNCHECKED_ENTRIES = frozenset("model optimizer scheduler scaler iteration rng config num_classes category_ids".split())
"""The entries of the checkpoints written before checksums, which still load (unverified)."""


def digest(state: Any) -> str:
    """The sha256 of everything in ``state``: each tensor's dtype, shape and bytes, each container's
    type, length and order, each plain value's type and ``repr`` (exact for floats)."""
    hasher = hashlib.sha256()
    _feed(hasher, state)
    return hasher.hexdigest()


def _feed(hasher: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"tensor {value.dtype} {tuple(value.shape)};".encode())
        hasher.update(flat.view(torch.uint8).numpy())  # the bytes as stored, without a copy
    elif isinstance(value, dict):
        hasher.update(f"{type(value).__name__} {len(value)};".encode())
        for key, item in value.items():
            _feed(hasher, key)
            _feed(hasher, item)
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{type(value).__name__} {len(value)};".encode())
        for item in value:
            _feed(hasher, item)
    else:
        hasher.update(f"{type(value).__name__} {value!r};".encode())


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, dicts, lists and plain values only) and its :func:`digest` to
    ``path`` atomically."""
    checked = {**state, CHECKSUM: digest(state)}
    atomic_write(path, lambda f: torch.save(checked, f), binary=True)


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (a checkpoint can never execute code) and check
    it against the checksum saved with it.

    An empty, truncated, foreign or changed file, or one without the entries a checkpoint has, is
    one line naming ``path``. Checkpoints written before checksums load unverified."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a checkpoint file; pass checkpoint.pt or its run folder")
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise EOFError("the file is empty")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except pickle.UnpicklingError:  # its advice, to load with weights_only=False, would run what the file says
        raise UserError(
            f"{path}: corrupt or not an atssrepro checkpoint (a damaged pickle, or one holding objects other than "
            "tensors and plain values); delete it to start over"
        ) from None
    except Exception as e:  # whatever else a damaged zip or pickle makes torch.load raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:200]
        raise UserError(f"{path}: corrupt or not an atssrepro checkpoint ({reason}); delete it to start over") from None
    if isinstance(state, dict):
        _verify(path, state)
    expected = {"model": dict, "config": dict, "iteration": int, "num_classes": int}
    wrong = [
        key for key, kind in expected.items() if not isinstance(state, dict) or not isinstance(state.get(key), kind)
    ]
    if wrong:
        raise UserError(
            f"{path}: not an atssrepro checkpoint (no valid {', '.join(wrong)} entry); delete it or pass another file"
        )
    return state


def _verify(path: Path, state: dict[str, Any]) -> None:
    """Remove the checksum from ``state`` and check it; without one, every entry must be one of a
    checkpoint written before checksums (a damaged checksum entry leaves an unknown one)."""
    stored = state.pop(CHECKSUM, None)
    if stored is None:
        unknown = [key for key in state if key not in UNCHECKED_ENTRIES]
        if not unknown:
            return
        problem = f"unknown entries {', '.join(map(repr, unknown))[:200]} and no checksum"
    elif not isinstance(stored, str) or stored != _digest_or_none(state):
        problem = "its content differs from the checksum saved with it: the file changed after it was written"
    else:
        return
    raise UserError(
        f"{path}: corrupt checkpoint ({problem}); delete it to train the run again, or restore the file from a copy"
    )


def _digest_or_none(state: dict[str, Any]) -> str | None:
    """:func:`digest`, or None for content no checkpoint holds (a tensor type whose bytes cannot be viewed)."""
    try:
        return digest(state)
    except (RuntimeError, TypeError, ValueError):
        return None


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
