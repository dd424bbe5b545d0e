"""Progress of long work on the terminal (issue 17, item 6): the local queue names each run's log
and shows its latest iteration and loss; ``analyze assignment`` shows how far it is."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from atssrepro.harness.follow import QueueView

from cli import atssrepro


def window(iteration: int, loss: float) -> str:
    return json.dumps({"iter": iteration, "loss": loss, "cls": loss / 2, "reg": loss / 2, "lr": 0.01}) + "\n"


def test_plain_lines_show_each_new_window_of_this_start_only(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(window(2, 3.0) + window(4, 2.5))  # an earlier start's windows
    output = io.StringIO()
    with QueueView(Console(file=output, width=60)) as view:
        follower = view.follow("[2/3] abc", log, 8)
        with open(log, "a") as f:
            f.write(window(6, 2.25) + '{"iter": 8, "lo')  # half a line: not yet
        follower.poll()
        with open(log, "a") as f:
            f.write('ss": 2.0}\n')
        follower.close()
    assert output.getvalue().splitlines() == [
        "[2/3] abc: iteration 6/8, loss 2.250",
        "[2/3] abc: iteration 8/8, loss 2.000; trained, evaluating",
    ]  # one whole line each, however narrow the console


def test_a_resumed_start_that_drops_the_stale_windows_shows_its_own(tmp_path):
    from atssrepro.engine.run_dir import RunDir

    run = RunDir(tmp_path)
    run.log_path.write_text(window(2, 3.0) + window(4, 2.5) + window(6, 2.25) + '{"iter": 8')  # checkpoint at 4
    output = io.StringIO()
    with QueueView(Console(file=output, width=60)) as view:
        follower = view.follow("[1/1] abc", run.log_path, 8)
        run.resume_log(4)  # the resumed start, before its first window
        follower.poll()
        run.append_log({"iter": 6, "loss": 2.0})
        follower.close()
    assert output.getvalue().splitlines() == ["[1/1] abc: iteration 6/8, loss 2.000"]


def test_on_a_terminal_each_run_has_a_live_line(tmp_path):
    logs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    view = QueueView(Console(file=io.StringIO(), force_terminal=True))
    with view:
        followers = [view.follow(f"[{i + 1}/2] run{i}", log, 10) for i, log in enumerate(logs)]
        logs[0].write_text(window(5, 1.5))
        logs[1].write_text(window(5, 1.0) + window(10, 0.5))
        for follower in followers:
            follower.poll()
        assert [(t.description, t.completed, t.fields["status"]) for t in view.bar.tasks] == [
            ("[1/2] run0", 5, "loss 1.500"),
            ("[2/2] run1", 10, "loss 0.500, evaluating"),
        ]
        followers[1].close()
        assert [t.description for t in view.bar.tasks] == ["[1/2] run0"]  # a run that ended leaves


@pytest.mark.slow
def test_run_names_each_log_and_shows_progress_of_runs_on_several_slots(synth_coco, tmp_path):
    results = tmp_path / "results"
    where = ["--preset", "smoke", "--data", str(synth_coco), "--results", str(results)]
    ran = atssrepro("run", "table4", "--rows", "k3", "--rows", "k5", *where, "--gpus", "cpu0,cpu1")
    lines = ran.stderr.splitlines()
    for run_id in (p.name for p in results.iterdir()):
        started = [line for line in lines if f"{run_id} (table4/" in line and "training on cpu" in line]
        assert len(started) == 1 and started[0].endswith(f"its log: {results / run_id / 'train.log'}"), lines
        windows = [line for line in lines if re.search(rf"\] {run_id}: iteration \d+/20, loss \d+\.\d+", line)]
        assert len(windows) == 4, lines  # the smoke preset logs every 5 iterations
        assert re.search(r"iteration 20/20, loss \d+\.\d+; trained, evaluating$", windows[-1]), windows


def test_analyze_assignment_shows_progress(synth_coco, tmp_path):
    ann = synth_coco / "annotations" / "instances_val2017.json"
    result = atssrepro(
        "analyze", "assignment", "--ann", str(ann), "--strategy", "atss", "--out", str(tmp_path / "analysis")
    )
    progress = [line for line in result.stderr.splitlines() if line.startswith("assigning images")]
    assert progress and re.fullmatch(r"assigning images (\d+)/\1", progress[-1]), result.stderr
    assert (tmp_path / "analysis" / "summary.csv").is_file()
