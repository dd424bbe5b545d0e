"""Commands that need no model start without importing torch (or pycocotools, matplotlib, scipy); those that
read no results, pandas neither."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
sys.argv = ["atssrepro", *sys.argv[1:]]
from atssrepro.cli import main
try:
    main()
except SystemExit:
    pass
heavy = ("torch", "torchvision", "pycocotools", "matplotlib", "submitit", "scipy", "pandas")
print("LOADED", *sorted(m for m in heavy if m in sys.modules))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["list"],
        ["show", "table3"],
        ["status", "table3"],
        ["report", "table3"],
        ["report", "table4", "--claims", "--format", "json"],
        ["run", "table3", "--dry-run"],
        ["run", "table4", "--dry-run", "--json", "--seeds", "2"],
    ],
)
def test_no_model_commands_do_not_import_torch(args, tmp_path):
    store = ["--results", str(tmp_path)] if args[0] in ("list", "status", "report", "run") else []
    result = subprocess.run([sys.executable, "-c", PROBE, *args, *store], capture_output=True, text=True, cwd=tmp_path)
    loaded = result.stdout.strip().splitlines()[-1].split()[1:]
    allowed = ["pandas"] if args[0] == "report" else []  # a report is a DataFrame; planning needs none
    assert loaded == allowed, f"atssrepro {' '.join(args)} imported: {' '.join(loaded)}"
