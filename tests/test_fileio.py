"""Atomic writes: the file appears whole, with the mode the umask gives new files."""

from __future__ import annotations

import os
import stat

import pytest

from atssrepro.fileio import umask, write_json, write_text


@pytest.fixture
def restore_umask():
    mask = os.umask(0o022)
    yield
    os.umask(mask)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, restore_umask, mask, mode):
    os.umask(mask)
    assert umask() == mask
    write_text(tmp_path / "shared" / "report.md", "text")
    write_json(tmp_path / "run.json", {"state": "done"})
    for path in (tmp_path / "shared" / "report.md", tmp_path / "run.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "shared"]  # no temporary file left
