"""How the command line shows things: messages as plain text, help, piped output (issue 17, items 5 and 9)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from atssrepro.cli import app

from cli import assert_one_line_error, atssrepro


def test_a_message_with_brackets_prints_them(tmp_path):
    folder = tmp_path / "[run 1]"
    folder.mkdir()
    detections = folder / "dets[v2].json"
    detections.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 1.0}]))
    ann = folder / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "width": 9, "height": 9}], "annotations": [], "categories": []}))
    result = atssrepro("eval", "--detections", str(detections), "--ann", str(ann), check=False)
    assert_one_line_error(result, "[1, 2, 3]", str(detections))


def _commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


def _every_command():
    import typer.main

    return [(), *_commands(typer.main.get_command(app))]


@pytest.mark.parametrize("command", _every_command(), ids=lambda c: " ".join(c) or "atssrepro")
def test_help_shows_placeholders_not_types(command):
    text = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    for bad in ("<bool>", "<str>", "<list", "<int>", "<path>", "``", "{", "INTEGER", "TEXT", "BOOLEAN", "PATH "):
        assert bad not in text, (bad, text)
    assert "--help   " in text or "--help  " in text  # the flag alone, no placeholder after it


def test_help_in_a_subprocess_reads_as_one_paragraph():
    text = atssrepro("status", "--help", env={"COLUMNS": "200", "PATH": ""}).stdout
    assert "[TABLE...]" in text and "<bool>" not in text
    # The docstring's line breaks do not show: "the next `atssrepro run`" flows on one line at 200 columns.
    assert "resumes on the next atssrepro run), corrupt" in text


def test_piped_output_is_not_wrapped(tmp_path):
    data = str(tmp_path / ("a-folder-name-longer-than-a-line-" * 6))
    result = atssrepro("show", "table3", "--preset", "smoke", "--data", data)
    assert max(len(line) for line in result.stdout.splitlines()) > 160  # the title, whole
    error = atssrepro("eval", "--detections", data + "/d.json", "--ann", data + "/a.json", check=False)
    assert_one_line_error(error, data)


def test_mistyped_names_get_a_suggestion_and_the_choices(tmp_path):
    results = ["--results", str(tmp_path)]
    row = atssrepro("run", "table3", "--rows", "fcoss", "--dry-run", *results, check=False)
    assert_one_line_error(row, "--rows fcoss", "did you mean 'fcos'?", "(rows: retinanet_a1, retinanet_a1_atss, fcos,")
    fmt = atssrepro("report", "table3", "--format", "md", *results, check=False)
    assert_one_line_error(fmt, "did you mean 'markdown'?")


def test_list_shows_zoo_which_errors_offer(tmp_path):
    result = CliRunner().invoke(app, ["list", "--results", str(tmp_path)], env={"COLUMNS": "200"})
    assert (
        result.exit_code == 0
        and [line.split()[0] for line in result.output.splitlines()[3:] if line.strip()][-1] == "zoo"
    )


def _store_with_an_interrupted_and_a_done_run(tmp_path):
    """results/ holding table3's fcos runs (smoke, data DATA): seed 0 interrupted at iteration 17 (its
    log ahead at 15, as after Ctrl-C between windows), seed 1 done; as the runs record them."""
    from atssrepro import config as cfg
    from atssrepro.harness.plan import plan
    from atssrepro.harness.specs import load_table

    data, results = str(tmp_path / "data"), tmp_path / "results"
    interrupted, done = plan([load_table("table3")], "smoke", ["fcos"], 2, data)
    for run, info in (
        (interrupted, {"state": "interrupted", "checkpoint_iteration": 17,
                       "message": "interrupted after iteration 17; the next start resumes from there"}),
        (done, {"state": "done"}),
    ):  # fmt: skip
        folder = results / run.run_id
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"id": run.run_id, "preset": "smoke", **info}))
        (folder / "config.toml").write_text(cfg.to_toml(run.config))
        (folder / "log.jsonl").write_text("".join(json.dumps({"iter": i, "loss": 1.0}) + "\n" for i in (5, 10, 15)))
    return data, results, interrupted, done


def test_status_run_and_dry_run_tell_the_same_story(tmp_path):
    data, results, interrupted, done = _store_with_an_interrupted_and_a_done_run(tmp_path)
    where = ["--preset", "smoke", "--data", data, "--results", str(results)]
    status = atssrepro("status", "table3", "--seeds", "2", *where).stdout
    (line,) = [line for line in status.splitlines() if interrupted.run_id in line]
    assert "17/20" in line and "the next start resumes from there" in line  # the message whole, not cut

    planned = atssrepro("run", "table3", "--rows", "fcos", "--seeds", "2", *where, "--dry-run").stdout
    (line,) = [line for line in planned.splitlines() if interrupted.run_id in line]
    assert " 0 " in line and "interrupted at iteration 17/20: resumes from there" in line
    (line,) = [line for line in planned.splitlines() if done.run_id in line]
    assert " 1 " in line and "done" in line
    assert f"total: {interrupted.cost:,} training images, for the 1 runs not done (1 done already)" in planned

    # Without the runs' --preset and --data: every run "not run", and a line that says where they are.
    other = atssrepro("status", "table3", "--results", str(results))
    assert f"2 run(s) in {results} were made with other settings: --preset smoke --data {data}" in other.stderr
    assert f"(see them: atssrepro status --preset smoke --data {data} --results {results})" in other.stderr


def test_the_outcome_line_of_run_is_the_status_line(tmp_path):
    from atssrepro.engine.run_state import RunState
    from atssrepro.harness.status import outcome_line
    from atssrepro.harness.store import Store

    _, results, interrupted, done = _store_with_an_interrupted_and_a_done_run(tmp_path)
    store = Store(results)
    line = outcome_line(interrupted, store, RunState.INTERRUPTED, "interrupted after iteration 17; ...")
    assert line == "interrupted at iteration 17/20: resumes from there on the next atssrepro run"
    assert outcome_line(done, store, RunState.DONE, "") == "done"
    assert outcome_line(done, store, RunState.BUSY, "another process trains it") == "busy: another process trains it"


def test_report_html_links_its_plots_and_says_which_tables_have_none(tmp_path):
    from atssrepro.harness.plan import plan
    from atssrepro.harness.specs import load_table

    results, folder = tmp_path / "results", tmp_path / "report folder"
    (k3, *_) = plan([load_table("table4")], "paper", ["k3"], 1, None)
    (results / k3.run_id).mkdir(parents=True)
    (results / k3.run_id / "run.json").write_text("{")  # corrupt
    result = atssrepro(
        "report", "table3", "table4", "table8", "--format", "html", "--results", str(results),
        "--out", str(folder / "report.html"), "--plots", str(folder / "plots"),
    )  # fmt: skip
    swept = "plots are drawn for the tables that sweep a value: table4, table5, table6"
    assert f"table3: no plot ({swept})" in result.stderr and f"table8: no plot ({swept})" in result.stderr
    text = (folder / "report.html").read_text()
    # Relative to the report: the folder moves as a whole.
    assert '<a href="plots/table4_sweep.png"><img src="plots/table4_sweep.png"' in text
    assert (folder / "plots" / "table4_sweep.png").is_file()
    assert "<code>atssrepro predict</code>" in text and "`" not in text
    assert "<th>k</th>" in text
    assert "Verdicts: 8 not run, 1 corrupt" in text  # not "9 not run"
    assert "Published numbers: CONFIRMED (2 sources: S1 + S2); sources: S1 = arXiv v4 text" in text


def test_json_reports_name_their_unit_percent(tmp_path):
    import pandas as pd

    from atssrepro.harness import report
    from atssrepro.harness.collect import COLUMNS
    from atssrepro.harness.specs import load_table

    data = json.loads(report.render([load_table("table4")], pd.DataFrame(columns=COLUMNS), "json"))
    assert data["unit"] == "percent" and data["tables"][0]["rows"][0]["metrics"]["AP"]["published"] == 38.0
