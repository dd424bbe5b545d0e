"""log.jsonl after a resume (issue 17, item 11): a start that resumes from its checkpoint drops the
windows an earlier start logged after it, and readers take the last record per iteration, so
``status`` shows the iteration the run stands at."""

from __future__ import annotations

import json

from atssrepro import config as cfg
from atssrepro.harness.store import Store


def windows(*iterations: int) -> str:
    return "".join(json.dumps({"iter": i, "loss": 10.0 / i + n}) + "\n" for n, i in enumerate(iterations))


def test_readers_take_the_last_window_per_iteration_and_a_resume_drops_the_stale_ones(tmp_path):
    store = Store(tmp_path / "results")
    run = store.run("abc")
    run.init(cfg.Config(), "smoke")
    run.log_path.write_text(windows(3, 6, 9, 12, 9, 12))  # resumed from 6, logged 9 and 12 again
    assert [(w.iter, w.loss) for w in run.log()] == [(3, 10 / 3), (6, 10 / 6 + 1), (9, 10 / 9 + 4), (12, 10 / 12 + 5)]
    run.log_path.write_text(windows(3, 6, 9, 12, 9) + '{"iter": 12, "lo')  # killed again after 9
    assert [w.iter for w in run.log()] == [3, 6, 9] and store.last_log("abc").iter == 9
    run.resume_log(6)  # the next start resumes from its checkpoint at 6: before its first window
    assert run.log_path.read_text() == windows(3, 6) and store.last_log("abc").iter == 6
    run.resume_log(0)  # a start from scratch (no checkpoint): the log starts again
    assert run.log_path.read_text() == "" and store.last_log("abc") is None


def test_absurd_counts_are_one_line():
    """(A device this machine lacks, ``analyze --device cuda:7``, is among test_fuzz_cli's cases, in
    process: a fresh process spends seconds importing torch.)"""
    from cli import assert_one_line_error, atssrepro

    assert_one_line_error(atssrepro("report", "table3", "--seeds", "-2", check=False), "--seeds -2", "[1, 100]")
    configured = atssrepro("config", "--set", "model.assign.topk=2000000000", check=False)
    assert_one_line_error(configured, "model.assign.topk = 2000000000", "[1, 1000]")
