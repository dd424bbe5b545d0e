"""Datasets written whole or not at all: each split is built in a folder beside the output and
moved into place at the end, so that a failed or interrupted command leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from atssrepro.errors import UserError
from atssrepro.fileio import make_dirs


def annotation_path(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


@contextlib.contextmanager
def staged_splits(out: Path, splits: Sequence[str], ours: Callable[[dict], bool]) -> Iterator[Path]:
    """Yield an empty folder beside ``out`` to write ``splits`` into, in the COCO layout
    (``{split}/`` and ``annotations/instances_{split}.json``); when the block ends, move each split
    into ``out`` in place of the one there before. When it raises, remove everything it made,
    folders created for ``out`` included.

    A split of ``out`` may be replaced when it is absent or empty, or when its annotation file is
    one that ``ours`` accepts and its folder holds only the images that file lists; anything else
    is refused before the block runs, naming the file or folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; give a folder path")
    for split in splits:
        _check_replaceable(out, split, ours)
    created = _first_missing(out.parent)
    make_dirs(out.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise UserError(f"cannot write beside {out} ({e.strerror}); pick a writable place") from None
    try:
        yield staging
        for split in splits:
            _move_into_place(staging, out, split)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            _remove_empty_folders(out.parent, created)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _check_replaceable(out: Path, split: str, ours: Callable[[dict], bool]) -> None:
    ann_path, folder = annotation_path(out, split), out / split
    listed: set[str] = set()
    if ann_path.exists():
        try:
            previous = json.loads(ann_path.read_bytes())
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or not ours(previous):
            raise UserError(f"{ann_path} belongs to another dataset; write to an empty folder or delete it")
        images = previous.get("images")
        listed = (
            {image.get("file_name") for image in images if isinstance(image, dict)}
            if isinstance(images, list)
            else set()
        )
    if folder.is_dir():
        strangers = sorted(entry.name for entry in folder.iterdir() if entry.name not in listed or not entry.is_file())
        if strangers:
            raise UserError(
                f"{folder} holds {len(strangers)} file(s) that no dataset written here lists (e.g. {strangers[0]}); "
                "write to an empty folder or delete it"
            )
    elif folder.exists():
        raise UserError(f"{folder} is a file, not a folder; write to an empty folder or delete it")


def _move_into_place(staging: Path, out: Path, split: str) -> None:
    """Swap ``staging``'s split into ``out``; the previous one goes into ``staging``'s trash. The
    annotation file goes first out and last in: a split without it is incomplete."""
    trash = staging / ".previous" / split
    make_dirs(trash)
    make_dirs(out / "annotations")
    moves = [
        (annotation_path(out, split), trash / "annotations.json"),
        (out / split, trash / split),
        (staging / split, out / split),
        (annotation_path(staging, split), annotation_path(out, split)),
    ]
    for source, target in moves:
        try:
            if source.exists():
                os.replace(source, target)
        except OSError as e:
            raise UserError(f"cannot move {source} to {target} ({e.strerror}); pick a writable place") from None


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder`` and its parents that does not exist yet (None: it exists)."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            return missing
        missing = path
    return missing


def _remove_empty_folders(folder: Path, outermost: Path) -> None:
    """Remove ``folder`` and its parents up to ``outermost`` while they are empty."""
    for path in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            path.rmdir()
        if path == outermost:
            return
