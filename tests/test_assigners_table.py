"""tables/assigners.toml: the assigners after ATSS under its controlled protocol, new measurements beside
context numbers that are never judged."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from atssrepro import config as cfg
from atssrepro.errors import UserError
from atssrepro.harness import report
from atssrepro.harness.plan import resolve_row, run_ids_by_row
from atssrepro.harness.specs import load_table, parse_table

from cli import atssrepro

SPEC = load_table("assigners")


@pytest.mark.parametrize("preset", ["paper", "smoke", "demo"])
def test_the_atss_row_is_table3_row2_itself(preset):
    table3 = load_table("table3")
    ours = run_ids_by_row([SPEC], preset, 2, "/datasets/coco")
    theirs = run_ids_by_row([table3], preset, 2, "/datasets/coco")
    for seed in (0, 1):
        assert ours["assigners", "atss", seed] == theirs["table3", "retinanet_a1_atss", seed]


def test_every_row_changes_the_assignment_only():
    atss = resolve_row(SPEC, SPEC.row("atss"), "paper", 0)
    strategies = []
    for row in SPEC.rows:
        config = resolve_row(SPEC, row, "paper", 0)
        assert config.model.backbone.weights == "imagenet" and config.train.iterations == 90_000
        assert dataclasses.replace(config, model=dataclasses.replace(config.model, assign=atss.model.assign)) == atss
        strategies.append(config.model.assign.strategy)
    assert strategies == ["atss", "tal", "tal", "simota", "ota", "dsl", "paa"]
    assert set(strategies) == {"atss", *cfg.PREDICTION_AWARE}
    recipe = resolve_row(SPEC, SPEC.row("tal_recipe"), "paper", 0).model.assign.tal
    assert (recipe.warmup_iters, recipe.soft_targets) == (29_316, True)


def test_only_the_atss_row_has_a_published_number():
    assert [row.id for row in SPEC.rows if row.published] == ["atss"]
    assert {row.id for row in SPEC.rows if row.context} == {"atss", "tal", "tal_recipe", "ota", "paa"}


GOOD = {"title": "T", "caption": "c", "metrics": ["AP"], "sources": {"S1": "a README"}}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"context": {"AP50": 40.0}, "context_source": "S1"}, "context 'AP50' is not among the metrics"),
        ({"context": {"AP": 40.0}}, "need a context_source that cites a key"),
        ({"context": {"AP": 40.0}, "context_source": "a README"}, "need a context_source that cites a key"),
        ({"context_source": "S1"}, "and only they do"),
        ({"context": {"AP": 140.0}, "context_source": "S1"}, "context.AP = 140.0 is not valid"),
        ({"context": {"AP": 40.0}, "context_source": "S7"}, "cites source S7"),
    ],
)
def test_bad_context_is_a_one_line_error(row, message):
    with pytest.raises(UserError, match=message):
        parse_table({**GOOD, "rows": [{"id": "a", "label": "A", **row}]}, Path("t.toml"))


def _frame(values: dict[str, dict[str, float]]) -> pd.DataFrame:
    lines = []
    for row in SPEC.rows:
        done = row.id in values
        for metric in SPEC.metrics:
            reproduced = values[row.id].get(metric, math.nan) if done else math.nan
            lines.append({"table": "assigners", "row": row.id, "label": row.label, "preset": "paper", "seed": 0,
                          "run_id": row.id, "state": "done" if done else "not run", "metric": metric,
                          "reproduced": reproduced, "published": row.published.get(metric, math.nan)})  # fmt: skip
    return pd.DataFrame(lines)


def test_the_report_names_new_measurements_and_labels_context_with_its_source():
    frame = _frame({"atss": {"AP": 39.2, "AP50": 57.4}, "ota": {"AP": 39.9, "AP50": 57.0}})
    summary = report.summarize(frame)
    verdicts = summary[summary["metric"] == "AP"].set_index("row")["verdict"]
    assert verdicts["atss"] == "reproduced" and verdicts["ota"] == "new measurement"
    text = report.render([SPEC], frame, "markdown")
    ota = next(line for line in text.splitlines() if line.startswith("| OTA |"))
    assert "39.9" in ota and "new measurement" in ota and ota.endswith("| AP 40.7 (S2) |")
    assert "(-0.8)" not in ota, "a context number is never turned into a delta"
    assert "New measurements (no published number, never judged against one): TAL, TAL + warm-up" in text
    assert "S2 = OTA README" in text and "Context (not judged)" in text
    rows = {row["id"]: row for row in json.loads(report.render([SPEC], frame, "json"))["tables"][0]["rows"]}
    assert rows["ota"]["verdict"] == "new measurement" and rows["ota"]["context"]["AP"] == 40.7
    assert rows["ota"]["metrics"]["AP"]["published"] is None and "context" not in rows["simota"]


def test_plots_show_and_list_work_on_it(tmp_path):
    frame = _frame({"atss": {"AP": 39.2}, "tal": {"AP": 40.1}})
    ((_, path),) = report.plot_sweeps([SPEC], frame, tmp_path)
    assert path.name == "assigners_sweep.png" and path.stat().st_size > 0
    shown = atssrepro("show", "assigners").stdout
    assert "(40.7)" in shown and "(n): context, reported for another recipe, never judged" in shown
    assert "39.3 (39.4)" in shown  # the ATSS row: its published number, then its context
    assert "assigners" in atssrepro("list", "assigners").stdout
    statuses = atssrepro("status", "assigners", "--results", str(tmp_path / "results"), "--json").stdout.splitlines()
    assert [json.loads(line)["rows"] for line in statuses] == [[f"assigners/{row.id}"] for row in SPEC.rows]
