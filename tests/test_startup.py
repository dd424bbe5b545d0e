"""Commands that need no model start without importing torch (or pycocotools, matplotlib)."""

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
heavy = ("torch", "torchvision", "pycocotools", "matplotlib", "submitit")
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
        ["run", "table3", "--dry-run"],
    ],
)
def test_no_model_commands_do_not_import_torch(args, tmp_path):
    store = ["--results", str(tmp_path)] if args[0] in ("list", "status", "report", "run") else []
    result = subprocess.run([sys.executable, "-c", PROBE, *args, *store], capture_output=True, text=True, cwd=tmp_path)
    loaded = result.stdout.strip().splitlines()[-1]
    assert loaded == "LOADED", f"atssrepro {' '.join(args)} imported: {loaded.removeprefix('LOADED')}"
