"""Run ids are a contract with users' stores: a changed id retrains a finished run.

``data/run_ids.json`` holds the id of every row of every table spec (paper, smoke and demo
presets, seeds 0 and 1) and of every built-in config under each preset, all with the absolute
data root ``/datasets/coco``, as they were before the refactors and new fields that followed
them. A new config field whose default keeps today's behaviour must leave every id here as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atssrepro import config as cfg
from atssrepro.harness.plan import run_ids_by_row
from atssrepro.harness.specs import available_specs, load_table

PINNED = json.loads((Path(__file__).parent / "data" / "run_ids.json").read_text())
DATA_ROOT = "/datasets/coco"


@pytest.mark.parametrize("name", available_specs())
def test_every_row_keeps_its_run_id(name: str) -> None:
    spec = load_table(name)
    presets = ["paper"] if name == "zoo" else ["paper", "smoke", "demo"]
    ids = {}
    for preset in presets:
        for (table, row, seed), run_id in run_ids_by_row([spec], preset, 2, DATA_ROOT).items():
            ids[f"{table}/{row}/{preset}/seed{seed}"] = run_id
    pinned = {key: value for key, value in PINNED.items() if key.startswith(f"{name}/")}
    assert ids == pinned


def test_builtin_configs_keep_their_ids() -> None:
    ids = {
        f"config/{name or '-'}/{preset}": cfg.config_id(cfg.build_config(name, preset, (), DATA_ROOT))
        for name in [None, *cfg.builtin_configs()]
        for preset in ("paper", "smoke", "demo")
    }
    assert ids == {key: value for key, value in PINNED.items() if key.startswith("config/")}


def test_pinned_ids_cover_every_spec() -> None:
    assert {key.split("/")[0] for key in PINNED} == {*available_specs(), "config"}
