"""A run that fails exits at once: real ``atssrepro`` processes with an error while batches load,
or after a checkpoint, end within a small multiple of a normal run, leave no process behind and
record the run as failed with its message.

Faults that no input can cause come from tests/faults/sitecustomize.py (on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from atssrepro.engine.run_dir import RunDir

from cli import TINY, atssrepro

FAULTS = Path(__file__).parent / "faults"
SHORT = [
    *TINY,
    "--set",
    "train.iterations=4",
    "--set",
    "train.lr_steps=[3]",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "data.num_workers=2",
]
# A failing run does at most the work of a normal one; the slack covers a busy machine.
BOUND = 3


def start(command: list[str], fault: str | None = None, **fault_env: str) -> subprocess.Popen:
    """``command`` in a process group of its own, so that any process it leaves behind is found."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS), str(REPO), os.environ.get("PYTHONPATH", "")])}
    if fault:
        env.update(ATSSREPRO_TEST_FAULT=fault, **fault_env)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen(command, env=env, start_new_session=True, **pipes)


def finish(process: subprocess.Popen, seconds: float) -> tuple[int, str]:
    """Wait at most ``seconds`` for ``process``; then check that its whole process group is gone."""
    try:
        _, stderr = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"still running after {seconds:.0f} s")
    time.sleep(0.2)  # let the kernel reap what died with it
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # a DataLoader worker or torchrun rank left alive would be found
    return process.returncode, stderr


def train(*args: str) -> list[str]:
    return [sys.executable, "-m", "atssrepro", "train", *SHORT, *args]


@pytest.fixture(scope="module")
def normal_run(synth_coco, tmp_path_factory) -> float:
    """Seconds of a normal run of the same size, training and evaluation, on this machine now."""
    started = time.perf_counter()
    code, stderr = finish(start(train("--data", str(synth_coco), "--out", str(tmp_path_factory.mktemp("ok")))), 600)
    assert code == 0, stderr[-2000:]
    return time.perf_counter() - started


def broken_copy(synth_coco: Path, tmp_path: Path, damage) -> Path:
    """The dataset with every training image but the first (which opening the dataset checks) damaged."""
    data = tmp_path / "data"
    shutil.copytree(synth_coco, data)
    for image in sorted((data / "train2017").iterdir())[1:]:
        damage(image)
    return data


def run_info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("corrupt", 2, "cannot be decoded; replace it with the COCO original"),
        ("missing", 2, "not found; restore it from the COCO download"),
        ("worker", 1, "RuntimeError: injected fault in a DataLoader worker"),
        ("after_checkpoint", 1, "RuntimeError: injected fault after a checkpoint"),
    ],
)
def test_a_failing_run_exits_promptly_and_is_recorded(synth_coco, tmp_path, normal_run, case, code, message):
    data, fault = synth_coco, None
    if case == "corrupt":
        data = broken_copy(synth_coco, tmp_path, lambda image: image.write_bytes(b"not a jpeg"))
    elif case == "missing":
        data = broken_copy(synth_coco, tmp_path, Path.unlink)
    else:
        fault = case
    run = tmp_path / "run"
    returncode, stderr = finish(start(train("--data", str(data), "--out", str(run)), fault), BOUND * normal_run)

    assert returncode == code
    assert stderr.strip().splitlines()[-1].endswith(message)
    info = run_info(run)
    assert info["state"] == "failed" and info["message"].endswith(message)
    assert "\n" not in info["message"]
    if case == "after_checkpoint":
        assert (run / "checkpoint.pt").is_file()
    assert not RunDir(run).is_locked()


@pytest.mark.slow
def test_a_failing_rank_ends_every_rank(synth_coco, tmp_path, normal_run):
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "atssrepro", "train", *SHORT, "--data", str(synth_coco), "--out", str(run)]  # fmt: skip
    returncode, stderr = finish(start(command, "worker", ATSSREPRO_TEST_FAULT_RANK="1"), BOUND * normal_run)

    assert returncode != 0, stderr[-2000:]
    info = run_info(run)
    assert info["state"] == "failed" and info["world_size"] == 2, info


@pytest.mark.slow
def test_a_failing_run_frees_its_queue_slot(synth_coco, tmp_path, normal_run):
    """Three smoke runs on two CPU slots; the first fails in a worker, its slot trains the third."""
    rows = ["--rows", "fcos", "--rows", "gn", "--rows", "giou"]
    args = ["table1", *rows, "--preset", "smoke", "--data", str(synth_coco)]
    results = tmp_path / "results"
    planned = atssrepro("run", *args, "--dry-run", "--json").stdout.splitlines()
    failing, *others = [json.loads(line)["run_id"] for line in planned]
    command = [sys.executable, "-m", "atssrepro", "run", *args, "--results", str(results), "--gpus", "cpu0,cpu1"]
    started = time.perf_counter()
    # Only a guard against a hang: the bound that matters is checked on the runs' own times below.
    returncode, stderr = finish(start(command, "worker", ATSSREPRO_TEST_FAULT_RUN=failing), 30 * normal_run)
    elapsed = time.perf_counter() - started

    assert returncode == 1, stderr[-2000:]
    statuses = atssrepro("status", "table1", "--preset", "smoke", "--data", str(synth_coco),
                         "--results", str(results), "--json").stdout.splitlines()  # fmt: skip
    states = {s["run_id"]: s for s in map(json.loads, statuses)}
    assert states[failing]["state"] == "failed"
    assert states[failing]["message"] == "RuntimeError: injected fault in a DataLoader worker"
    assert [states[run_id]["state"] for run_id in others] == ["done", "done"]
    durations = [run_info(results / run_id)["finished"] - run_info(results / run_id)["started"] for run_id in others]
    # Two rounds on two slots: the failed run's slot took the third run as soon as it was free.
    assert elapsed < BOUND * max(durations) + 2 * normal_run
