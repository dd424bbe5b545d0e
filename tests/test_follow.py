"""Progress of long work on the terminal (issue 17, item 6): the local queue names each run's log
and shows its latest iteration and loss; ``analyze assignment`` shows how far it is."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
from rich.console import Console

from atssrepro.harness.follow import QueueView


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


# Stands in for a run's worker: logs a window every 5 of 20 iterations into the run's log.jsonl.
STUB = """
import json, os, sys, time
for iteration in range(5, 21, 5):
    time.sleep(0.05)
    with open(os.path.join(sys.argv[1], "log.jsonl"), "a") as log:
        log.write(json.dumps({"iter": iteration, "loss": 4.0 / iteration}) + "\\n")
"""


def test_the_queue_names_each_log_and_shows_the_progress_of_runs_on_several_slots(tmp_path, monkeypatch, coco_layout):
    from atssrepro import config as cfg
    from atssrepro.harness import executors
    from atssrepro.harness.executors import QueueExecutor
    from atssrepro.harness.plan import PlannedRun
    from atssrepro.harness.store import Store

    script = tmp_path / "stub.py"
    script.write_text(STUB)
    monkeypatch.setattr(
        executors, "worker_command", lambda job, outcome, launcher: [sys.executable, script, job.run_dir]
    )
    config = cfg.apply(cfg.Config(), {"model": {"backbone": {"weights": ""}}, "train": {"iterations": 20}}, "test")
    config = cfg.with_data_root(config, str(coco_layout))
    runs = [PlannedRun(run_id, config, cfg.SMOKE, 0) for run_id in ("run0", "run1", "run2")]
    store, output = Store(tmp_path / "results"), io.StringIO()
    QueueExecutor(Console(file=output, width=60), ["0", "1"]).execute(runs, store)
    lines = output.getvalue().splitlines()
    for i, run_id in enumerate(("run0", "run1", "run2")):
        started = [line for line in lines if line.startswith(f"[{i + 1}/3] {run_id} (") and "training on" in line]
        assert len(started) == 1 and started[0].endswith(f"its log: {store.run(run_id).path / 'train.log'}"), lines
        windows = [line for line in lines if re.fullmatch(rf"\[{i + 1}/3\] {run_id}: iteration \d+/20, loss .*", line)]
        assert [line.split(": ", 1)[1] for line in windows] == [
            "iteration 5/20, loss 0.800",
            "iteration 10/20, loss 0.400",
            "iteration 15/20, loss 0.267",
            "iteration 20/20, loss 0.200; trained, evaluating",
        ], lines


def test_analyze_assignment_shows_progress(synth_coco, tmp_path, monkeypatch, capsys):
    """In this process (a fresh one spends seconds importing torch); stderr is not a terminal here."""
    from atssrepro import cli

    ann = synth_coco / "annotations" / "instances_val2017.json"
    out = tmp_path / "analysis"
    monkeypatch.setattr(sys, "argv", ["atssrepro", "analyze", "assignment", "--ann", str(ann), "--out", str(out)])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    stderr = capsys.readouterr().err
    progress = [line for line in stderr.splitlines() if line.startswith("assigning images")]
    assert exited.value.code in (0, None) and progress, stderr
    assert re.fullmatch(r"assigning images (\d+)/\1", progress[-1]), stderr
    assert (out / "summary.csv").is_file()
