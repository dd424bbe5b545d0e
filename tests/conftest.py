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
