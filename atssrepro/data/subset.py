"""Carve a small real subset out of a full COCO: some images, all of their annotations, all categories."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

from atssrepro.data.annotations import read_coco
from atssrepro.data.staging import annotation_path, staged_splits
from atssrepro.errors import UserError
from atssrepro.fileio import atomic_write, make_dirs, write_json

SUBSET_KEY = "atssrepro_subset"
"""The top-level entry of a subset's annotation file that marks it as one: ``source``, ``images``, ``seed``."""


def make_coco_subset(coco_root: Path, split: str, num_images: int, out: Path, *, seed: int = 0) -> Path:
    """Write ``num_images`` images of ``coco_root``'s ``split`` (a seeded random choice) to ``out``.

    Images go to ``out/{split}/`` (hard links where possible, else copies) and their annotations to
    ``out/annotations/instances_{split}.json``, whose path is returned. The annotation file keeps the
    source's other top-level entries (info, licenses, all categories) and adds ``SUBSET_KEY``, what
    it was taken from; images are sorted by id. The split is built beside ``out`` and moved into
    place at the end, replacing a subset written there before: a failure leaves nothing.
    """
    coco_root, out = Path(coco_root), Path(out)
    ann_path = coco_root / "annotations" / f"instances_{split}.json"
    image_dir = coco_root / split
    if not ann_path.is_file():
        raise UserError(f"annotation file {ann_path} not found; pass the COCO root that holds annotations/")
    if not image_dir.is_dir():
        raise UserError(f"image folder {image_dir} not found; the COCO root needs the {split}/ images")
    if out.resolve() == coco_root.resolve():
        raise UserError(f"output folder {out} is the COCO root itself; write the subset to another folder")

    dataset = read_coco(ann_path)
    available = len(dataset["images"])
    if not 1 <= num_images <= available:
        raise UserError(
            f"--images {num_images} is out of range: {ann_path} has {available} images; take 1 to {available}"
        )
    chosen = sorted(random.Random(seed).sample(dataset["images"], num_images), key=lambda image: image["id"])
    chosen_ids = {image["id"] for image in chosen}
    annotations = [a for a in dataset["annotations"] if a["image_id"] in chosen_ids]
    origin = {"source": str(ann_path.resolve()), "images": num_images, "seed": seed}

    with staged_splits(out, [split], lambda previous: SUBSET_KEY in previous) as staging:
        for image in chosen:
            _link_or_copy(image_dir / image["file_name"], staging / split / image["file_name"])
        subset = {**dataset, "images": chosen, "annotations": annotations, SUBSET_KEY: origin}
        write_json(annotation_path(staging, split), subset, indent=None)
    return annotation_path(out, split)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target``; copy it where a link is impossible (another filesystem)."""
    if not source.is_file():
        raise UserError(f"image {source} is listed in the annotations but missing; re-download the COCO images")
    make_dirs(target.parent)
    try:
        os.link(source, target)  # a link appears whole, so it needs no temporary file
    except OSError:
        with source.open("rb") as src:
            atomic_write(target, lambda f: shutil.copyfileobj(src, f), binary=True)
