"""Training end to end: the CI smoke run, kill-and-resume equality, divergence (learning: test_demo.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from atssrepro.cli.common import metrics_in_percent
from atssrepro.engine import checkpoint

from cli import TINY, atssrepro, metrics_of

STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


@pytest.mark.slow
def test_smoke_preset_on_tiny_coco(tiny_coco, tmp_path):
    run = tmp_path / "run"
    metrics = metrics_of(atssrepro("train", "--preset", "smoke", "--data", str(tiny_coco), "--out", str(run), "--json"))
    assert list(metrics["stats"]) == STATS and metrics["num_images"] == 50
    assert metrics_in_percent(json.loads((run / "metrics.json").read_text())) == metrics
    assert json.loads((run / "run.json").read_text())["state"] == "done"
    assert (run / "config.toml").is_file() and (run / "detections.json").is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["iter"] == 20 and all(r["loss"] > 0 for r in log)
    # A finished run is not trained again: the same command only reports.
    again = atssrepro("train", "--preset", "smoke", "--data", str(tiny_coco), "--out", str(run), "--json")
    assert metrics_of(again) == metrics


RESUME = [*TINY, "--set", "train.iterations=24", "--set", "train.checkpoint_every=6", "--set", "train.log_every=3"]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights_and_metrics(synth_coco, tmp_path):
    data = ["--data", str(synth_coco)]
    straight = metrics_of(atssrepro("train", *RESUME, *data, "--out", str(tmp_path / "straight"), "--json"))

    run = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "atssrepro", "train", *RESUME, *data, "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (run / "checkpoint.pt").exists():
        assert process.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = checkpoint.load(run / "checkpoint.pt")["iteration"]
    assert interrupted_at < 24 and not (run / "metrics.json").exists()

    resumed = metrics_of(atssrepro("train", *RESUME, *data, "--out", str(run), "--json"))
    assert resumed == straight
    # Re-evaluating the run folder, or its checkpoint alone, reproduces the metrics.
    assert metrics_of(atssrepro("eval", str(run), "--json")) == straight
    assert metrics_of(atssrepro("eval", str(run / "checkpoint.pt"), "--json"))["stats"] == straight["stats"]
    a = checkpoint.load(tmp_path / "straight" / "checkpoint.pt")
    b = checkpoint.load(run / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_divergence_stops_the_run_without_evaluating(synth_coco, tmp_path):
    run = tmp_path / "run"
    result = atssrepro(
        "train", *TINY, "--data", str(synth_coco), "--out", str(run),
        "--set", "train.base_lr=1e6", "--set", "train.iterations=6", "--set", "train.log_every=1",
        "--set", "train.lr_steps=[5]",
        check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "diverged" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((run / "run.json").read_text())["state"] == "diverged"
    assert not (run / "metrics.json").exists()
