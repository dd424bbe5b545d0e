"""Running the real ``atssrepro`` command in a subprocess, as a user does."""

from __future__ import annotations

import json
import subprocess
import sys

# Small, fast runs on the synthetic dataset: 128-pixel images, batch 2, smoke-sized model.
TINY = [
    "--preset",
    "smoke",
    "--set",
    "data.train_short_side=[128, 128]",
    "--set",
    "data.test_short_side=128",
    "--set",
    "data.max_size=192",
    "--set",
    "train.batch_size=2",
]


def atssrepro(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "atssrepro", *args], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"atssrepro {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def metrics_of(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2 and one line on stderr, ``error: ...`` holding every fragment; no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
