"""What one command prints, another takes back: run ids across commands, config values, config files."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from atssrepro import config as cfg
from atssrepro.harness.plan import assignments, plan, resolve_row, toml_value
from atssrepro.harness.specs import available_tables, load_table

from cli import atssrepro


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (False, "false"), (True, "true"), ("iou", "iou"), ([640, 800], "[640,800]"), (1e-05, "1e-05"), (2.0, "2.0"),
        ("true", """'"true"'"""), ("two words", """'"two words"'"""), ("7", """'"7"'"""),
        (["a", "b"], """'["a","b"]'"""),
    ],
)  # fmt: skip
def test_values_print_as_one_shell_word_that_set_reads_back(value, printed):
    assert toml_value(value) == printed
    (word,) = shlex.split(f"k={printed}")  # as a shell passes it on, unquoted
    assert cfg.parse_override(word) == {"k": value}


@pytest.mark.parametrize("table", available_tables())
def test_printed_config_values_set_back_give_the_same_run(table):
    """`show` prints the base and each row's fields, `run --dry-run` each run's differences from the
    base: passed to --set, either gives the config of the run they describe."""
    spec = load_table(table)
    base = shlex.split(" ".join(assignments(spec.base)))  # pasted into a shell
    runs = {run.run_id: run for run in plan([spec], "paper", data_root="/data/coco")}
    for row in spec.runnable_rows:
        shown = cfg.build_config(None, "paper", base + shlex.split(" ".join(assignments(row.config))), "/data/coco")
        assert cfg.config_id(shown) == cfg.config_id(resolve_row(spec, row, "paper", 0, "/data/coco")), row.id
    for run_id, run in runs.items():
        dry_run = cfg.build_config(None, "paper", base + shlex.split(" ".join(assignments(run.diff))), "/data/coco")
        assert cfg.config_id(dry_run) == run_id


@pytest.mark.slow
def test_show_list_and_status_find_the_runs_of_run_with_data(synth_coco, tmp_path):
    results, data = str(tmp_path / "results"), str(synth_coco)
    options = ["--preset", "smoke", "--data", data]
    atssrepro("run", "table1", "--rows", "fcos", *options, "--results", results)

    planned = atssrepro("run", "table1", "--rows", "fcos", *options, "--dry-run", "--json").stdout
    (fcos,) = [json.loads(line)["run_id"] for line in planned.splitlines()]
    shown = atssrepro("show", "table1", *options).stdout
    assert re.search(rf"^\s+fcos\s.*\s{fcos}\s", shown, re.MULTILINE), shown
    assert "false" in shown and "False" not in shown
    listed = atssrepro("list", *options, "--results", results).stdout
    runs, done = re.search(r"^\s+table1\s.*\s(\d+)\s+(\d+)\s*$", listed, re.MULTILINE).groups()
    assert (int(runs), int(done)) == (len(plan([load_table("table1")], "smoke")), 1)
    statuses = [json.loads(line) for line in atssrepro("status", "table1", *options, "--results", results,
                                                         "--json").stdout.splitlines()]  # fmt: skip
    assert [s["run_id"] for s in statuses if s["state"] == "done"] == [fcos]
    # Without --data, the ids are those of another dataset: none of them is done.
    assert not re.search(fcos, atssrepro("show", "table1", "--preset", "smoke").stdout)
