"""The README's first command: `make demo` trains the demo preset on the embedded synthetic dataset
and prints the AP the README states. This pins that figure (and proves the detector learns: an
untrained model scores 0.0 on the unseen validation images)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cli import atssrepro, metrics_of

REPO = Path(__file__).resolve().parents[1]
DEMO_THREADS = "2"  # the Makefile's DEMO_THREADS: the AP is exact for a given CPU and thread count
# Another CPU rounds convolutions a little differently, and 300 iterations from scratch amplify that.
TOLERANCE_AP = 1.0


def readme_demo_ap() -> float:
    match = re.search(r"prints its metrics: ([0-9.]+) AP on the unseen", (REPO / "README.md").read_text())
    assert match, "README.md no longer states the demo's AP as 'prints its metrics: X AP on the unseen'"
    return float(match.group(1))


@pytest.mark.slow
def test_make_demo_prints_the_readme_ap(tmp_path):
    makefile = (REPO / "Makefile").read_text()
    assert f"DEMO_THREADS ?= {DEMO_THREADS}" in makefile
    env = {**os.environ, "OMP_NUM_THREADS": DEMO_THREADS}
    atssrepro("data", "synth", "--out", str(tmp_path / "synth"), env=env)
    result = atssrepro(
        "train", "--preset", "demo", "--data", str(tmp_path / "synth"), "--out", str(tmp_path / "demo"), "--json",
        env=env,
    )  # fmt: skip
    ap = 100 * metrics_of(result)["stats"]["AP"]
    assert abs(ap - readme_demo_ap()) <= TOLERANCE_AP, (
        f"the demo printed {ap:.1f} AP, README.md says {readme_demo_ap()}: if training semantics changed on "
        "purpose, re-measure with `make demo` and update the README's figure"
    )
