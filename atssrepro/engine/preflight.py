"""What a run needs before it starts, checked before anything is written: its dataset (both
annotation files, both image folders) and a folder it can write to. Pretrained weights are found by
``model/pretrained.py``. Imports no torch: ``run --dry-run`` warns with it.

``train`` (``engine/run.execute``) and ``run`` (the local queue and Slurm: ``harness/executors.py``)
call these before the first run folder is written, so that a wrong ``--data`` or ``--results`` is
one line and leaves nothing behind, rather than a failed run, or one that fails after its training.
"""

from __future__ import annotations

import os
from pathlib import Path

from atssrepro import config as cfg
from atssrepro.errors import UserError

SPLITS = {"train": ("train_ann", "train_images"), "val": ("val_ann", "val_images")}


def data_problem(data: cfg.DataConfig, splits: tuple[str, ...] = ("train", "val")) -> str | None:
    """Why the dataset of ``data`` cannot serve ``splits`` ("train", "val"): the one line naming each
    missing or unreadable annotation file and image folder, their keys and how to fix it; None when
    every one is there."""
    root = Path(data.root)
    keys = [key for split in splits for key in SPLITS[split]]
    layout = ", ".join(getattr(data, key) + ("" if key.endswith("_ann") else "/") for key in keys)
    fix = f"pass --data ROOT, the folder holding {layout}"
    if not root.is_dir():
        return f"data root {root} (data.root) {'is not a folder' if root.exists() else 'not found'}; {fix}"
    missing = {}
    for key in keys:
        path = cfg.data_path(data, getattr(data, key))
        if key.endswith("_ann"):
            found, readable = path.is_file(), os.access(path, os.R_OK)
        else:
            found, readable = path.is_dir(), os.access(path, os.R_OK | os.X_OK)
        if not found or not readable:
            missing[key] = f"{path} (data.{key}{'' if not found else ', not readable'})"
    if not missing:
        return None
    keys_to_set = ", ".join(f"data.{key}" for key in missing)
    return f"the dataset at {root} lacks {' and '.join(missing.values())}; {fix} (or set {keys_to_set})"


def check_data(data: cfg.DataConfig, splits: tuple[str, ...] = ("train", "val")) -> None:
    """Raise :func:`data_problem` as a UserError."""
    problem = data_problem(data, splits)
    if problem:
        raise UserError(problem)


def folder_problem(path: Path, writable: bool) -> str | None:
    """Why ``path`` cannot be (``writable``: cannot become, or be written into as) a folder: it is a
    file, or lies under one, or its nearest existing folder is not writable. None when it can."""
    given = os.path.abspath(path)
    existing = given
    while not os.path.exists(existing) and existing != os.path.dirname(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return "is a file, not a folder" if existing == given else f"lies under the file {existing}"
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        return f"the folder {existing} is not writable"
    return None
