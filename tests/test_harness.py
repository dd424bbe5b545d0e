"""The tables as specs: validation, planning, the run store, and running tables end to end."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from atssrepro.errors import UserError
from atssrepro.harness.plan import plan
from atssrepro.harness.specs import available_tables, load_table, parse_table

from cli import atssrepro

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "ATSS_TABLES.md"
CLAIM_IDS = [
    "T1-imprs", "T1-each", "T1-gap", "T2-cls", "T2-reg", "T3-retina", "T3-fcos", "T3-lite", "T3-boxpoint",
    "T4-flat", "T4-small", "T4-large", "T5-flat", "T6-flat", "T7-imprs", "T7-atss", "T7-useless",
]  # fmt: skip


# --- specs -------------------------------------------------------------------------------------


def test_all_eight_tables_load():
    assert available_tables() == [f"table{i}" for i in range(1, 9)]
    specs = [load_table(name) for name in available_tables()]
    assert [len(s.rows) for s in specs] == [7, 4, 5, 9, 5, 5, 6, 44]
    assert sum(r.reference_only for r in specs[7].rows) == 36


GOOD = {
    "title": "Table 9",
    "caption": "A test table.",
    "metrics": ["AP", "AP50"],
    "rows": [{"id": "a", "label": "A", "config": {"model": {"assign": {"topk": 7}}}, "published": {"AP": 38.0}}],
}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(titel="x"), "unknown field 'titel'; did you mean 'title'"),
        (lambda d: d["rows"][0].update(publishd={}), "rows[0]: unknown field 'publishd'"),
        (
            lambda d: d["rows"][0].update(config={"model": {"asign": {"topk": 7}}}),
            "row 'a': config: unknown config key",
        ),
        (lambda d: d["rows"][0].update(config={"train": {"amp": "fp8"}}), "train.amp = 'fp8' is not valid"),
        (lambda d: d.update(metrics=["AP", "mAP"]), "'mAP' is not a COCO metric"),
        (lambda d: d["rows"][0].update(published={"APl": 50.0}), "'APl' is not among the metrics this table reports"),
        (lambda d: d["rows"].append(dict(d["rows"][0])), "row 'a': duplicate row id"),
        (lambda d: d["rows"][0].update(id="Bad Id"), "rows[0]: id = 'Bad Id' is not valid: must be lowercase"),
        (lambda d: d.pop("caption"), "missing 'caption'"),
        (lambda d: d.update(layout="grid"), "grid"),
        (
            lambda d: d["rows"][0].update(published={"AP": float("nan")}),
            "rows[0]: published.AP = nan is not valid; expected a number",
        ),
        (
            lambda d: d["rows"][0].update(published={"AP": 250}),
            "rows[0]: published.AP = 250 is not valid: must be a number in 0..100",
        ),
        (lambda d: d.update(metrics=["AP", "AP"]), "names a metric twice"),
        (
            lambda d: d["rows"][0].update(config={"model": {"assign": {"topk": 0}}}),
            "model.assign.topk = 0 is not valid",
        ),
        (lambda d: d["rows"][0].update(info={"Data": 3}), "rows[0]: info.Data = 3 is not valid; expected a str"),
        (lambda d: d["rows"][0].update(checked=[1]), "checked = [1] is not valid; expected a list of strings"),
        (lambda d: d["rows"][0].update(grid=["a"]), "grid = ['a'] is not valid; expected a list of 2 strings"),
        (lambda d: d.update(info_columns="Data"), "info_columns = 'Data' is not valid; expected a list"),
        (lambda d: d.update(layout=3), "layout = 3 is not valid; expected one of 'rows', 'grid', 'checklist'"),
        (lambda d: d.update(status="CONFIRMED (S1 + S2)", sources={"S1": "arXiv"}), "status cites source S2"),
        (lambda d: d["rows"][0].update(note="S3 only"), "row 'a': note cites source S3, which [sources] does not"),
        (lambda d: d.update(sources={"arxiv": "the text"}), "sources: key 'arxiv' must be S and a number"),
    ],
)
def test_spec_errors_name_the_file_and_the_place(change, message):
    data = json.loads(json.dumps(GOOD))
    change(data)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        parse_table(data, Path("tables/table9.toml"))
    assert str(error.value).startswith("tables/table9.toml") and "\n" not in str(error.value)
    parse_table(json.loads(json.dumps(GOOD)), Path("tables/table9.toml"))  # the unchanged spec is fine


def test_published_numbers_match_the_paper_facts():
    """Every number of Tables 3-7 equals the one in ATSS_TABLES.md (nothing invented or mistyped)."""
    if not PAPER.is_file():
        pytest.skip("the paper facts (../shared/paper) are not beside this checkout")
    text = PAPER.read_text()
    for number, metrics_from in ((3, 1), (5, 1), (6, 1), (7, 3)):
        section = text[text.index(f"Table {number} —") :]
        lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
        spec = load_table(f"table{number}")
        for row, line in zip(spec.runnable_rows, lines):
            values = [float(v) for v in line.strip("| ").split("|")[metrics_from:]]
            assert [row.published[m] for m in spec.metrics] == values, row.id
    k_line = next(line for line in text[text.index("Table 4 —") :].splitlines() if line.startswith("| AP"))
    assert [r.published["AP"] for r in load_table("table4").rows] == [float(v) for v in k_line.split("|")[2:-1]]


# --- planning ----------------------------------------------------------------------------------


def test_paper_plan_trains_each_experiment_once():
    specs = [load_table(name) for name in available_tables()]
    runs = plan(specs, "paper")
    assert len(runs) == 39  # Tables 1-7: 33 runs, Table 8: 6 (its multi-scale rows reuse the DCN runs)
    by_row = {str(ref): run for run in runs for ref in run.rows}
    shared = ["table3/retinanet_a1_atss", "table4/k9", "table5/scale8", "table6/ratio_1_1", "table7/atss_1x1"]
    assert len({by_row[r].run_id for r in shared}) == 1
    assert by_row["table8/x101_64x4d_dcn_ms"] is by_row["table8/x101_64x4d_dcn"] and by_row["table8/x101_64x4d_dcn"].tta
    assert by_row["table4/k3"].diff == {"model.assign.topk": 3}
    assert plan(specs, "paper", seeds=3)[0].seed == 0 and len(plan(specs, "paper", seeds=3)) == 3 * 39


def test_dry_run_json_lists_runs_with_rows_diff_and_cost():
    result = atssrepro("run", "table4", "table5", "--dry-run", "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    runs = [line for line in lines if "run_id" in line]  # then one line per claim of the tables
    assert [line["claim"] for line in lines[len(runs) :]] == ["T4-flat", "T4-small", "T4-large", "T5-flat"]
    assert len(runs) == 13  # 9 values of k + 5 scales - the shared k=9 / scale 8 run
    shared = next(r for r in runs if "table4/k9" in r["rows"])
    assert shared["rows"] == ["table4/k9", "table5/scale8"] and shared["cost_images"] == 90_000 * 16


# --- running tables ----------------------------------------------------------------------------


def run_table(*args, results, data, check=True, **kwargs):
    return atssrepro("run", *args, "--preset", "smoke", "--data", str(data), "--results", str(results), check=check)


@pytest.mark.slow
def test_smoke_tables_1_and_3_on_tiny_coco_and_their_report(tiny_coco, tmp_path):
    results = tmp_path / "results"
    # Ten runs through the local queue on two CPU slots (one core each): never two on one slot.
    queue = run_table("table1", "table3", "--gpus", "cpu0,cpu1", results=results, data=tiny_coco)
    assert "2 slot(s): cpu0 | cpu1" in queue.stderr
    runs = [json.loads(path.read_text()) for path in results.glob("*/run.json")]
    assert len(runs) == 10 and {run["devices"] for run in runs} == {"cpu0", "cpu1"}
    report = atssrepro(
        "report", "table1", "table3", "--format", "markdown", "--preset", "smoke",
        "--data", str(tiny_coco), "--results", str(results),
    ).stdout  # fmt: skip
    for name in ("table1", "table3"):
        for row in load_table(name).rows:
            for value in row.published.values():
                assert f"{value:.1f}" in report
    assert "not comparable" in report and "not run" not in report
    # The 17 claims of the paper on this store, in every format: smoke runs cannot resolve them, or not all
    # their rows ran (Tables 2, 4-7); judged as the smoke preset's own.
    expected = {"unresolved", "not run"}
    for fmt in ("terminal", "markdown", "csv", "latex", "html", "json"):
        claims = atssrepro(
            "report", "--claims", "--format", fmt, "--preset", "smoke",
            "--data", str(tiny_coco), "--results", str(results),
        ).stdout  # fmt: skip
        if fmt == "csv":
            lines = pd.read_csv(io.StringIO(claims))
            assert set(lines["preset"]) == {"smoke"}
            lines = lines[lines["part"] == 0].to_dict("records")
        elif fmt == "json":
            lines = [line for line in json.loads(claims)["claims"] if line["part"] == 0]
        elif fmt == "markdown":  # | T1-imprs / the statement | rows | ... | verdict |
            cells = [line.strip("| ").split(" | ") for line in claims.splitlines() if line.startswith("| T")]
            lines = [{"claim": cells[0].split(" / ")[0], "verdict": cells[-1]} for cells in cells]
        else:
            assert "Claims (smoke preset)" in claims and all(claim in claims for claim in CLAIM_IDS), fmt
            continue
        verdicts = {line["claim"]: line["verdict"] for line in lines}
        assert list(verdicts) == CLAIM_IDS and set(verdicts.values()) <= expected, (fmt, verdicts)
        assert {verdicts["T3-fcos"], verdicts["T1-gap"]} == {"unresolved"} and verdicts["T4-small"] == "not run"
    # Nothing left to do: a second run trains nothing and says so.
    again = run_table("table1", "table3", results=results, data=tiny_coco)
    assert "10 of 10 runs finished" in again.stderr and "training" not in again.stderr


@pytest.mark.slow
def test_seeds_are_separate_runs_and_reported_as_mean_and_std(synth_coco, tmp_path):
    results = tmp_path / "results"
    run_table("table4", "--rows", "k3", "--seeds", "2", "--gpus", "cpu0,cpu1", results=results, data=synth_coco)
    assert len([p for p in results.iterdir() if p.is_dir()]) == 2
    report = atssrepro(
        "report", "table4", "--format", "json", "--preset", "smoke", "--seeds", "2",
        "--data", str(synth_coco), "--results", str(results),
    ).stdout  # fmt: skip
    row = next(r for r in json.loads(report)["tables"][0]["rows"] if r["id"] == "k3")
    assert row["metrics"]["AP"]["n"] == 2


@pytest.mark.slow
def test_concurrent_runs_of_one_table_never_train_the_same_run_twice(synth_coco, tmp_path):
    results = tmp_path / "results"
    command = [sys.executable, "-m", "atssrepro", "run", "table4", "--rows", "k5", "--preset", "smoke"]
    command += ["--data", str(synth_coco), "--results", str(results)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.run(command, capture_output=True, text=True)
    first_out = first.communicate()
    outcomes = [second.stderr, first_out[1]]
    # One of them trained it; the other found it busy (or already done, if it came late).
    assert sum("busy" in out for out in outcomes) <= 1
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    assert json.loads((run / "run.json").read_text())["state"] == "done"
    json.loads((run / "metrics.json").read_text())  # complete, valid JSON
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.slow
def test_ctrl_c_and_kill_leave_runs_that_the_next_run_resumes(synth_coco, tmp_path):
    results = tmp_path / "results"
    command = [sys.executable, "-m", "atssrepro", "run", "table4", "--rows", "k7", "--preset", "smoke"]
    command += ["--data", str(synth_coco), "--results", str(results)]
    status = ["status", "table4", "--preset", "smoke", "--data", str(synth_coco), "--results", str(results)]

    def start_and_signal_when(ready, signum: int) -> subprocess.Popen:
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 300
        while not ready():
            assert process.poll() is None and time.time() < deadline, "the run ended too soon"
            time.sleep(0.02)
        os.killpg(process.pid, signum)  # the harness and its training process, as a terminal does
        process.wait()
        return process

    def logged() -> list[str]:
        return [line for path in results.glob("*/log.jsonl") for line in path.read_text().splitlines()]

    # Ctrl-C: the run saves the iteration it is in and says so; the command exits 130.
    first = start_and_signal_when(lambda: logged(), signal.SIGINT)
    assert first.returncode == 130 and "run again to resume" in " ".join(first.stderr.read().split())
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    info = json.loads((run / "run.json").read_text())
    assert info["state"] == "interrupted" and info["message"].startswith("interrupted after iteration")
    assert (run / "checkpoint.pt").exists() and not (run / "metrics.json").exists()
    # status shows where it resumes, the iteration of its checkpoint, as the message says.
    stopped_at = info["checkpoint_iteration"]
    assert info["message"].startswith(f"interrupted after iteration {stopped_at};")
    (line,) = [line for line in atssrepro(*status).stdout.splitlines() if run.name in line]
    assert f" {stopped_at}/20 " in line, line

    # kill -9 after the resumed run logged more: nothing is recorded, the lock is gone.
    second = start_and_signal_when(lambda: len(logged()) > 1, signal.SIGKILL)
    assert second.returncode == -signal.SIGKILL and json.loads((run / "run.json").read_text())["state"] == "running"
    assert "interrupted" in atssrepro(*status).stdout  # marked running, but no process holds it

    run_table("table4", "--rows", "k7", results=results, data=synth_coco)
    assert "resuming" in (run / "train.log").read_text()
    assert json.loads((run / "run.json").read_text())["state"] == "done"
