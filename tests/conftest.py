"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_coco() -> Path:
    """Root of the 50+50-image real COCO subset (annotations/, train2017/, val2017/).

    Found through ATSSREPRO_TINY_COCO or at ../shared/data/tiny_coco beside the checkout. CI always
    has it; on a user's machine without it, the tests that need real COCO images are skipped.
    """
    root = Path(os.environ.get("ATSSREPRO_TINY_COCO", REPO.parent / "shared" / "data" / "tiny_coco"))
    if not (root / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"tiny COCO not found at {root}; set ATSSREPRO_TINY_COCO")
    return root


@pytest.fixture(scope="session")
def synth_coco(tmp_path_factory) -> Path:
    """A small synthetic COCO-format dataset (8 train, 4 val images), made once per session."""
    from atssrepro.data.synth import make_synthetic_coco

    root = tmp_path_factory.mktemp("synth")
    make_synthetic_coco(root, train_images=8, val_images=4, seed=0, min_side=128, max_side=192)
    return root


@pytest.fixture
def coco_layout(tmp_path) -> Path:
    """A dataset root with the COCO layout and nothing in it (empty annotation files, empty image
    folders): what the checks before a run starts look for, for tests whose runs never read it."""
    root = tmp_path / "layout"
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir()
        (root / "annotations" / f"instances_{split}.json").write_text("{}")
    return root
