"""Packaging detections for the COCO evaluation server (test-dev has no public annotations)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import BinaryIO

from atssrepro.errors import UserError
from atssrepro.fileio import atomic_write

_NAME = re.compile(r"[A-Za-z0-9_-]+")


def export_results_zip(
    detections: list[dict], out: Path, split: str = "test-dev2017", method: str = "atssrepro"
) -> Path:
    """Write ``out/detections_{split}_{method}_results.zip`` holding the COCO results JSON
    ``detections_{split}_{method}_results.json``: the names the COCO server expects.

    Args:
        detections: COCO results dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        out: the directory to write the zip in, created if missing.
        split, method: parts of the file names; letters, digits, '-' and '_' only.

    Returns:
        The path of the zip.
    """
    for what, value in (("split", split), ("method", method)):
        if not _NAME.fullmatch(value):
            raise UserError(f"{what} name {value!r} is not valid; use only letters, digits, '-' and '_'")
    stem = f"detections_{split}_{method}_results"
    payload = json.dumps(detections)

    def write(file: BinaryIO) -> None:
        with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{stem}.json", payload)

    path = Path(out) / f"{stem}.zip"
    atomic_write(path, write, binary=True)
    return path
