"""TensorBoard scalars in each run folder, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli import TINY, atssrepro, metrics_of

FAULTS = Path(__file__).parent / "faults"
RUN = [*TINY, "--set", "train.iterations=12", "--set", "train.checkpoint_every=6", "--set", "train.log_every=3"]
RUN += ["--set", "train.lr_steps=[9]"]
LOSSES = ("loss", "cls", "reg", "centerness")


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run folder's event files, as TensorBoard shows it: tag -> [(step, value)]."""
    events = EventAccumulator(str(run))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def last_log_records(run: Path) -> dict[int, dict]:
    """log.jsonl by iteration (a resumed start drops the windows after its checkpoint; the last would count)."""
    return {record["iter"]: record for record in map(json.loads, (run / "log.jsonl").read_text().splitlines())}


def assert_curves_match_the_log(run: Path, metrics: dict) -> None:
    curves, log = scalars(run), last_log_records(run)
    for name in (*LOSSES, "lr", "img_per_s"):
        assert [step for step, _ in curves[f"train/{name}"]] == [3, 6, 9, 12], name  # each step once, in order
        for step, value in curves[f"train/{name}"]:
            assert value == pytest.approx(log[step][name], rel=1e-6), (name, step)
    stats = {stat: value for stat, value in metrics["stats"].items() if value is not None}  # no object of that size
    assert {tag for tag in curves if tag.startswith("eval/")} == {f"eval/{stat}" for stat in stats}
    for stat, value in stats.items():
        assert curves[f"eval/{stat}"] == [(12, pytest.approx(value, abs=1e-4))], stat  # both in percent


@pytest.mark.slow
def test_training_writes_the_losses_and_the_final_metrics(synth_coco: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = metrics_of(atssrepro("train", *RUN, "--data", str(synth_coco), "--out", str(run), "--json"))
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert_curves_match_the_log(run, metrics)

    # A run killed after it logged iterations 9 and 12 but before its checkpoint of iteration 12 resumes
    # from iteration 6 and logs them again: TensorBoard shows each once (the resumed values).
    stopped = tmp_path / "stopped"  # the same run, stopped by a fault right after its first checkpoint
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")])}
    env["ATSSREPRO_TEST_FAULT"] = "after_checkpoint"
    result = atssrepro("train", *RUN, "--data", str(synth_coco), "--out", str(stopped), check=False, env=env)
    assert "injected fault after a checkpoint" in result.stderr
    shutil.copy(stopped / "checkpoint.pt", run / "checkpoint.pt")
    (run / "metrics.json").unlink()
    result = atssrepro("train", *RUN, "--data", str(synth_coco), "--out", str(run), "--json")
    assert "from iteration 6" in " ".join(result.stderr.split())  # the console wraps long lines
    resumed = metrics_of(result)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # one per start
    # The resumed start dropped the windows logged after the checkpoint (9, 12) and logged its own.
    assert [r["iter"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())] == [3, 6, 9, 12]
    assert_curves_match_the_log(run, resumed)
