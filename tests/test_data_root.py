"""A run's data root is resolved once, in the data-root step of the layering, to an absolute path:
its run id does not depend on how ``--data`` is spelled (issue 17, item 3)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import REPO

from atssrepro import config as cfg

from cli import assert_one_line_error, atssrepro

SMOKE_FCOS = ["table3", "--rows", "fcos", "--preset", "smoke"]


def spellings(tmp_path: Path) -> list[tuple[str, Path]]:
    """(``--data``, working directory) pairs that all name ``../shared/data/tiny_coco`` of the checkout,
    the README's relative path, which goes through the ``shared`` symlink (kept as it is, not resolved)."""
    absolute = os.path.abspath(REPO.parent / "shared" / "data" / "tiny_coco")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return [
        (absolute, tmp_path),
        (absolute + "/", tmp_path),
        ("../shared/data/tiny_coco", REPO),
        (os.path.relpath(absolute, elsewhere), elsewhere),
        (f"./{os.path.relpath(absolute, elsewhere)}/", elsewhere),
    ]


def test_every_spelling_of_a_data_root_gives_one_run_id_in_every_command(tmp_path):
    results = tmp_path / "results"
    ids = set()
    for data, cwd in spellings(tmp_path):
        where = ["--data", data]
        planned = atssrepro("run", *SMOKE_FCOS, *where, "--dry-run", "--json", cwd=cwd).stdout
        (line,) = [json.loads(text) for text in planned.splitlines()]
        status = atssrepro("status", "table3", "--preset", "smoke", *where, "--results", str(results), "--json",
                           cwd=cwd).stdout  # fmt: skip
        by_row = {row: s["run_id"] for s in map(json.loads, status.splitlines()) for row in s["rows"]}
        shown = atssrepro("show", "table3", "--preset", "smoke", *where, cwd=cwd).stdout
        assert line["run_id"] == by_row["table3/fcos"] and line["run_id"] in shown, (data, cwd)
        ids.add(line["run_id"])
    assert len(ids) == 1, ids


def test_the_data_root_is_stored_absolute_and_normalised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for spelling in ("coco", "coco/", "./coco", "sub/../coco", str(tmp_path / "coco"), str(tmp_path) + "//coco/"):
        assert cfg.build_config(None, "smoke", (), spelling).data.root == str(tmp_path / "coco"), spelling
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cfg.build_config(None, "smoke", (), "~/coco").data.root == str(tmp_path / "home" / "coco")
    # The default and a config file's relative root: relative to the current directory, at layering time.
    assert cfg.build_config(None, "smoke").data.root == str(tmp_path / "data" / "coco")
    config_file = tmp_path / "sub" / "mine.toml"
    config_file.write_text('[data]\nroot = "datasets/coco"\n')
    assert cfg.build_config(str(config_file), "smoke").data.root == str(tmp_path / "datasets" / "coco")


def test_a_symlinked_root_is_not_resolved_and_absolute_ids_are_kept(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    through_link = cfg.build_config(None, "smoke", (), str(tmp_path / "link"))
    assert through_link.data.root == str(tmp_path / "link")
    assert cfg.config_id(through_link) != cfg.config_id(cfg.build_config(None, "smoke", (), str(tmp_path / "real")))
    # An absolute root as it is today: the config holds the same string, so the id is the same.
    plain = cfg.build_config(None, "smoke", (), "/datasets/coco")
    assert plain.data.root == "/datasets/coco"
    assert cfg.config_id(plain) == cfg.config_id(cfg.build_config(None, "smoke", (), "/datasets/coco/"))


def test_a_stored_config_is_never_resolved_again(tmp_path, monkeypatch):
    """A run folder written before roots were resolved keeps its relative root, and its id."""
    stored = cfg.apply(cfg.Config(), {"data": {"root": "data/coco"}}, "test")
    monkeypatch.chdir(tmp_path)
    read = cfg.from_dict(cfg.to_dict(stored), "config.toml")
    assert read.data.root == "data/coco" and cfg.config_id(read) == cfg.config_id(stored)


def test_an_empty_data_root_is_one_line(tmp_path):
    assert_one_line_error(atssrepro("config", "--data", " ", check=False, cwd=tmp_path), "--data ' '", "dataset root")
