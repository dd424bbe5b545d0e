"""The device queue: packing runs onto slots, failures, Ctrl-C; and Ctrl-C in a real training run."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console

from atssrepro import config as cfg
from atssrepro.engine import checkpoint
from atssrepro.engine.run_state import RunState
from atssrepro.errors import UserError
from atssrepro.harness import executors
from atssrepro.harness.executors import QueueExecutor, Slot, local_devices, make_slots
from atssrepro.harness.plan import PlannedRun
from atssrepro.harness.runner import Job
from atssrepro.harness.store import Store

from cli import TINY, atssrepro

# Stands in for the worker process of a run: notes when it starts and ends, on which devices and through
# which launcher; sleeps; fails when its run id says so; exits 130 on Ctrl-C.
STUB = """
import json, os, sys, time
run_dir, events, seconds, launcher = sys.argv[1:]
run_id = os.path.basename(run_dir)

def note(event):
    line = {"run": run_id, "event": event, "time": time.time(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "launcher": launcher}
    with open(events, "a") as f:
        f.write(json.dumps(line) + "\\n")

note("start")
try:
    time.sleep(float(seconds))
except KeyboardInterrupt:
    note("interrupted")
    sys.exit(130)
note("end")
if "fail" in run_id:
    print("failing on purpose")
    sys.exit(1)
"""


class Stub:
    """The executors' worker command, replaced by :data:`STUB` sleeping ``seconds``."""

    def __init__(self, folder: Path) -> None:
        self.script, self.path = folder / "stub.py", folder / "events.jsonl"
        self.script.write_text(STUB)
        self.seconds = 1.0

    def command(self, job: Job, outcome_file: Path, launcher: Sequence[str]) -> list[str]:
        return [sys.executable, str(self.script), job.run_dir, str(self.path), str(self.seconds), " ".join(launcher)]

    def events(self) -> list[dict]:
        """What the stubs noted so far: run, event (start, end or interrupted), time, visible, launcher."""
        text = self.path.read_text() if self.path.exists() else ""
        return [json.loads(line) for line in text.split("\n")[:-1]]  # whole lines only


@pytest.fixture
def stub(tmp_path, monkeypatch) -> Stub:
    stub = Stub(tmp_path)
    monkeypatch.setattr(executors, "worker_command", stub.command)
    return stub


@pytest.fixture
def planned(coco_layout):
    """``planned(*run_ids)``: runs of the default config on an (empty) dataset, which the queue
    checks before it starts, and which the stubs never read."""

    def runs(*run_ids: str) -> list[PlannedRun]:
        # From scratch: the queue looks for the pretrained weights of runs that start training.
        config = cfg.apply(cfg.Config(), {"model": {"backbone": {"weights": ""}}}, "test")
        config = cfg.with_data_root(config, str(coco_layout))
        return [PlannedRun(run_id, config, cfg.SMOKE, 0) for run_id in run_ids]

    return runs


def intervals(recorded: list[dict]) -> dict[str, tuple[float, float]]:
    starts = {e["run"]: e["time"] for e in recorded if e["event"] == "start"}
    return {e["run"]: (starts[e["run"]], e["time"]) for e in recorded if e["event"] != "start"}


def test_runs_are_packed_onto_slots_and_a_failure_does_not_stop_the_queue(stub, tmp_path, planned):
    store = Store(tmp_path / "results")
    runs = planned("run0", "run1", "run2-fail", "run3", "run4")
    output = io.StringIO()
    outcomes = QueueExecutor(Console(file=output), ["cpu0", "cpu1"]).execute(runs, store)

    assert [o.run_id for o in outcomes] == [r.run_id for r in runs]  # plan order
    assert {o.run_id: o.state for o in outcomes} == {
        "run0": "done", "run1": "done", "run2-fail": "failed", "run3": "done", "run4": "done"
    }  # fmt: skip
    assert outcomes[2].message == "failing on purpose"
    assert store.info("run2-fail")["state"] == "failed"
    assert "2 slot(s): cpu0 | cpu1" in output.getvalue()

    recorded = stub.events()
    assert sorted(e["run"] for e in recorded if e["event"] == "start") == sorted(r.run_id for r in runs)  # once each
    assert all(e["visible"] == "" for e in recorded)  # CPU slots hide every GPU
    spans = intervals(recorded)
    devices = {run_id: store.info(run_id)["devices"] for run_id in spans}
    assert set(devices.values()) == {"cpu0", "cpu1"}
    # At most two at once, and two runs that overlap in time never share a slot.
    most = max(sum(start <= t < end for start, end in spans.values()) for t, _ in spans.values())
    assert most == 2
    for a, (a_start, a_end) in spans.items():
        for b, (b_start, b_end) in spans.items():
            if a < b and a_start < b_end and b_start < a_end:
                assert devices[a] != devices[b], (a, b)


def test_slots_of_several_gpus_train_with_torchrun(stub, tmp_path, planned):
    executor = QueueExecutor(Console(file=io.StringIO()), ["0", "1", "2", "3", "4"], gpus_per_run=2)
    assert [str(slot) for slot in executor.slots] == ["0,1", "2,3"]  # GPU 4 stays idle

    outcomes = executor.execute(planned("a", "b"), Store(tmp_path / "results"))

    assert [o.state for o in outcomes] == ["done", "done"]
    started = [e for e in stub.events() if e["event"] == "start"]
    assert sorted(e["visible"] for e in started) == ["0,1", "2,3"]
    assert all("-m torch.distributed.run --standalone --nproc_per_node 2" in e["launcher"] for e in started)


def test_runs_whose_batch_the_slot_cannot_split_are_refused_before_any_starts(stub, tmp_path, planned):
    executor = QueueExecutor(Console(file=io.StringIO()), ["0", "1", "2"], gpus_per_run=3)
    with pytest.raises(UserError, match=r"train.batch_size = 16 cannot be split over 3 processes \(--gpus-per-run\)"):
        executor.execute(planned("a"), Store(tmp_path / "results"))
    assert stub.events() == []


def test_local_devices(monkeypatch):
    assert local_devices("0,1, 3") == ["0", "1", "3"]
    assert local_devices("cpu0,cpu1") == ["cpu0", "cpu1"]
    for bad in ("", "0,,1", "gpu0", "0;rm -rf"):
        with pytest.raises(UserError, match="expected GPU ids separated by commas"):
            local_devices(bad)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert local_devices(None) == ["cpu"]  # without a GPU: one run at a time on the CPU
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert local_devices(None) == ["5", "7"]  # the physical ids this process was given
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local_devices(None) == ["0", "1"]


def test_slots(monkeypatch):
    assert make_slots(["cpu"], 1) == [Slot(("cpu",))]
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [slot.threads for slot in make_slots(["cpu0", "cpu1", "cpu2"], 1)] == [2, 2, 2]  # sharing the cores
    assert make_slots(["cpu0", "cpu1", "cpu2"], 1)[0].env()["OMP_NUM_THREADS"] == "2"
    assert [slot.threads for slot in make_slots(["0", "1"], 1)] == [0, 0]  # GPU runs keep torch's default
    assert Slot(("cpu",)).env()["CUDA_VISIBLE_DEVICES"] == ""
    assert Slot(("2", "3")).env()["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert Slot(("2",)).launcher() == [sys.executable]
    for devices, gpus_per_run in [(["0"], 2), (["0", "0"], 1), (["0", "cpu1"], 1), (["0"], 0)]:
        with pytest.raises(UserError):
            make_slots(devices, gpus_per_run)


HOLD_LOCK = """
import sys, time
from atssrepro.engine.run_dir import RunDir
with RunDir(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_run_that_another_process_trains_is_busy_and_left_as_it_is(tmp_path, planned):
    """The worker finds the run's lock held (RunBusy) and says so in its outcome record: no stub here."""
    store = Store(tmp_path / "results")
    (run,) = planned("held")
    store.run("held").init(run.config, "smoke")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store.run("held").path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        (outcome,) = QueueExecutor(Console(file=io.StringIO()), ["cpu"]).execute([run], store)
    finally:
        holder.kill()
        holder.wait()
    assert outcome.state is RunState.BUSY and "is being trained by another process" in outcome.message
    assert store.info("held")["state"] == "pending"  # nothing recorded over the other process's run


@pytest.mark.parametrize("running", [1, 2])
def test_ctrl_c_reaches_the_running_runs_and_starts_no_more(stub, tmp_path, planned, running):
    stub.seconds = 60
    store = Store(tmp_path / "results")
    runs = planned("run0", "run1", "run2", "run3")
    executor = QueueExecutor(Console(file=io.StringIO()), [f"cpu{i}" for i in range(running)])

    def ctrl_c_once_they_run() -> None:
        deadline = time.time() + 60
        while len(stub.events()) < running and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_they_run, daemon=True).start()
    started = time.time()
    with pytest.raises(KeyboardInterrupt):
        executor.execute(runs, store)
    assert time.time() - started < 30  # the stubs stopped instead of sleeping their 60 s

    events = sorted((e["run"], e["event"]) for e in stub.events())
    assert events == sorted((r.run_id, e) for r in runs[:running] for e in ("start", "interrupted"))
    states = [store.state(r.run_id) for r in runs]
    assert "done" not in states and states[running:] == [RunState.NOT_RUN] * (len(runs) - running)


@pytest.mark.slow
def test_ctrl_c_checkpoints_the_last_iteration_and_the_run_resumes(synth_coco, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--data", str(synth_coco), "--out", str(run)]
    args += ["--set", "train.iterations=6", "--set", "train.checkpoint_every=1000", "--set", "train.log_every=1"]
    args += ["--set", "train.lr_steps=[5]"]
    process = subprocess.Popen(
        [sys.executable, "-m", "atssrepro", "train", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log = run / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text()):
        assert process.poll() is None and time.time() < deadline, "the run ended before its first iteration"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) != 0

    stopped_at = checkpoint.load(run / "checkpoint.pt")["iteration"]  # none before: checkpoint_every=1000
    assert 0 < stopped_at < 6 and not (run / "metrics.json").exists()
    info = json.loads((run / "run.json").read_text())
    assert info["state"] == "interrupted" and info["message"].startswith(f"interrupted after iteration {stopped_at}")

    resumed = atssrepro("train", *args)
    assert f"resuming {run} from iteration {stopped_at}" in " ".join(resumed.stderr.split())
    info = json.loads((run / "run.json").read_text())
    assert info["state"] == "done" and "message" not in info  # the reason of the stop went with it
