"""Slurm: profiles, and runs submitted to a real cluster (slurm/start_local_cluster.sh).

The cluster tests train on the synthetic dataset in jobs of the local one-node cluster and are
skipped where no cluster with a ``debug`` partition answers (CI starts one: see ``.ci/run``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from atssrepro import config as cfg
from atssrepro.engine import checkpoint
from atssrepro.engine.run_dir import RunDir
from atssrepro.errors import UserError
from atssrepro.harness.executors import torchrun, worker_command
from atssrepro.harness.plan import PlannedRun, resolve_row
from atssrepro.harness.runner import Job
from atssrepro.harness.slurm import SlurmExecutor
from atssrepro.harness.slurm_job import rendezvous_port
from atssrepro.harness.slurm_profile import PROFILE_DIR, load_profile
from atssrepro.harness.slurm_queue import merged_state, slurm_states
from atssrepro.harness.specs import load_table
from atssrepro.harness.store import Store

from cli import atssrepro

REPO = Path(__file__).resolve().parents[1]


# --- profiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
def test_shipped_profiles_load(name):
    load_profile(name)


@pytest.mark.parametrize(
    "text, message",
    [
        ('partiton = "gpu"', "unknown config key 'partiton'; did you mean 'partition'?"),
        ('time_min = "1h"', "time_min = '1h' is not valid; expected an integer"),
        ("nodes = 0", "nodes = 0 is not valid: must be >= 1"),
        ("setup = 3", "setup = 3 is not valid"),
        ("gpus_per_node = 4\ncpu_processes_per_node = 2", "cpu_processes_per_node is for nodes without GPUs"),
    ],
)
def test_profile_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "cluster.toml"
    path.write_text(text + "\n")
    with pytest.raises(UserError, match=re.escape(message)) as error:
        load_profile(str(path))
    assert str(error.value).startswith(str(path))


def test_profile_fields_and_unknown_names():
    path = PROFILE_DIR / "example_cluster.toml"
    profile = load_profile(str(path))
    assert profile.gpus_per_node == profile.tasks_per_node == 8 and profile.setup
    with pytest.raises(UserError, match="neither a file nor one of"):
        load_profile("no_such_cluster")


def test_runs_whose_batch_the_profile_cannot_split_are_refused_before_submitting(tmp_path):
    profile = load_profile(str(PROFILE_DIR / "example_cluster.toml"))  # 8 GPUs per node
    run = PlannedRun("a", cfg.apply(cfg.Config(), {"train": {"batch_size": 4}}, "test"), cfg.PAPER, 0)
    with pytest.raises(UserError, match=r"cannot be split over 8 processes \(nodes x processes per node\)"):
        SlurmExecutor(Console(stderr=True), profile).execute([run], Store(tmp_path / "results"))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "run_state, slurm_state, requeues, shown",
    [
        ("pending", "PENDING", 0, "pending"),
        ("interrupted", "PENDING", 1, "requeued"),  # preempted, waiting to start again
        ("running", "REQUEUE_HOLD", 0, "requeued"),
        ("pending", "RUNNING", 0, "running"),  # the job started; the run not yet
        ("pending", "CANCELLED", 0, "cancelled"),
        ("interrupted", "CANCELLED", 0, "cancelled"),
        ("interrupted", "OUT_OF_MEMORY", 0, "failed"),  # killed without a word
        ("failed", "FAILED", 0, "failed"),
        ("done", "COMPLETED", 0, "done"),
        ("done", "RUNNING", 0, "done"),  # evaluating with --tta after training
        ("running", None, 0, "running"),  # Slurm forgot the job: the folder knows best
    ],
)
def test_status_merges_the_run_folder_with_slurm(run_state, slurm_state, requeues, shown):
    assert merged_state(run_state, slurm_state, requeues) == shown


def test_each_start_of_a_job_gets_its_own_rendezvous_port():
    ports = {rendezvous_port("123_4", restarts) for restarts in range(5)}
    assert len(ports) == 5 and all(20000 <= port < 60000 for port in ports)
    assert rendezvous_port("123_4", 1) == rendezvous_port("123_4", 1)


# --- on a cluster ------------------------------------------------------------------------------


def _why_no_cluster() -> str:
    """Why the cluster tests cannot run here; empty when a cluster with a debug partition answers."""
    if shutil.which("sinfo") is None:
        return "no Slurm here (sinfo is not on PATH); start one with slurm/start_local_cluster.sh"
    try:
        result = subprocess.run(
            ["sinfo", "--noheader", "--partition=debug", "--format=%a"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return "the Slurm cluster does not answer sinfo within 15 s"
    if result.returncode != 0 or "up" not in result.stdout.split():
        detail = (result.stderr.strip().splitlines() or ["sinfo lists none"])[-1]
        return f"no Slurm cluster with a partition 'debug' that is up answers ({detail})"
    return ""


@pytest.fixture(scope="module")
def cluster() -> None:
    """Skips the test without a cluster; fails it instead where ATSSREPRO_REQUIRE_SLURM is set (CI)."""
    reason = _why_no_cluster()
    if reason and os.environ.get("ATSSREPRO_REQUIRE_SLURM"):
        pytest.fail(f"ATSSREPRO_REQUIRE_SLURM is set, but {reason}")
    if reason:
        pytest.skip(reason)


def executor(**kwargs) -> SlurmExecutor:
    return SlurmExecutor(Console(stderr=True), load_profile("local"), **kwargs)


def wait_for(condition, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(0.2)


def statuses(*args: str, **kwargs) -> dict[str, dict]:
    """``atssrepro status --json``, by row id."""
    result = atssrepro("status", *args, "--json", **kwargs)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return {row.split("/")[1]: line for line in lines for row in line["rows"]}


@pytest.mark.slow
def test_a_smoke_table_on_slurm_from_submission_to_report(cluster, synth_coco, tmp_path):
    # A checkout of our own, to edit after submitting from it.
    checkout = tmp_path / "checkout"
    for name in ("atssrepro", "tables", "slurm"):
        shutil.copytree(REPO / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    from_checkout = {**os.environ, "PYTHONPATH": str(checkout)}
    where = ["--preset", "smoke", "--data", str(synth_coco), "--results", str(tmp_path / "results")]
    rows = ["--rows", "k3", "--rows", "k5"]
    slurm = ["--executor", "slurm", "--profile", "local"]

    submitted = atssrepro("run", "table4", *rows, *where, *slurm, env=from_checkout)
    assert "2 submitted" in submitted.stderr
    # Each job's line names its log, the file the run's progress goes to (issue 17, item 6).
    logs = re.findall(r"submitted, job (\S+), its log: (\S+)", " ".join(submitted.stderr.split()))
    assert len(logs) == 2 and all(log.endswith(".err") and job.split("_")[0] in log for job, log in logs), logs
    # Editing the checkout now changes nothing in the jobs: they run a snapshot of it.
    (checkout / "atssrepro" / "engine" / "run.py").write_text("raise RuntimeError('edited after submission')\n")

    # The local profile trains one run at a time: k5 waits in the queue behind k3; cancel it.
    queued = statuses("table4", *where)
    k3, k5 = queued["k3"], queued["k5"]
    assert k3["slurm_job_id"] and k3["state"] in ("pending", "running") and k5["state"] == "pending"
    assert k5["reason"] and not k5["node"]  # waits behind k3: JobArrayTaskLimit
    cancelled = atssrepro("cancel", k5["run_id"], *where[2:])
    assert f"cancelled job {k5['slurm_job_id']}" in cancelled.stderr
    assert statuses("table4", *where)["k5"]["state"] == "cancelled"

    # Submitting again leaves k3 in the queue, submits k5 anew, and waits for both.
    waited = atssrepro("run", "table4", *rows, *where, *slurm, "--wait")
    assert "queued, job" in waited.stderr and "submitted, job" in waited.stderr
    assert "2 of 2 runs finished" in waited.stderr

    done = statuses("table4", *where)
    for row in ("k3", "k5"):
        assert done[row]["state"] == "done" and done[row]["slurm_state"] == "COMPLETED", done[row]
        assert done[row]["node"] and done[row]["requeues"] == 0 and done[row]["iteration"] == 20
    info = json.loads((tmp_path / "results" / k3["run_id"] / "run.json").read_text())
    snapshot = Path(info["snapshot"])
    assert Path(info["code"]) == snapshot and snapshot.parent == tmp_path / "results" / ".snapshots"
    assert "edited" not in (snapshot / "atssrepro" / "engine" / "run.py").read_text()
    assert done["k5"]["slurm_job_id"] != k5["slurm_job_id"]

    report = json.loads(atssrepro("report", "table4", "--format", "json", *where).stdout)
    reported = {row["id"]: row for row in report["tables"][0]["rows"]}
    for row in ("k3", "k5"):
        metrics = json.loads((tmp_path / "results" / done[row]["run_id"] / "metrics.json").read_text())
        assert reported[row]["metrics"]["AP"]["mean"] == pytest.approx(100 * metrics["stats"]["AP"], abs=1e-3)
    assert "no job in the queue" in atssrepro("cancel", "table4", *where).stderr


@pytest.mark.slow
def test_a_preempted_ddp_job_is_requeued_and_ends_as_if_never_interrupted(cluster, synth_coco, tmp_path):
    spec = load_table("table4")
    k3 = next(row for row in spec.rows if row.id == "k3")
    config = resolve_row(spec, k3, "smoke", 0, str(synth_coco))
    small = {"data": {"train_short_side": [96, 96], "test_short_side": 96, "max_size": 160}}
    # log_every=1: DDP ranks agree on stopping at each logged iteration, so a stop comes at once.
    training = {"iterations": 15, "checkpoint_every": 5, "log_every": 1, "batch_size": 4}
    config = cfg.apply(config, {**small, "train": training}, "test")
    run = PlannedRun(cfg.config_id(config), config, cfg.SMOKE, 0)
    store = Store(tmp_path / "results")
    # Two training processes (a padding group of 2 images each of the batch of 4) in one job: DDP over gloo.
    profile = dataclasses.replace(load_profile("local"), cpus_per_task=1, cpu_processes_per_node=2)
    slurm = SlurmExecutor(Console(stderr=True), profile)
    folder = store.run(run.run_id)

    (outcome,) = slurm.execute([run], store)
    wait_for(folder.checkpoint_path.exists, "the first checkpoint")
    info = store.info(run.run_id)
    # A real preemption: a job of the higher-priority partition needs the whole node.
    urgent = subprocess.run(
        ["sbatch", "--parsable", "--partition=urgent", "--exclusive", f"--output={tmp_path}/urgent.out", "--wrap",
         "sleep 2"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    wait_for(lambda: store.info(run.run_id).get("requeues", 0) >= 1, "the requeue", timeout_s=60)
    assert not folder.metrics_path.exists()

    # The same run, uninterrupted and on two processes of one thread too (as the job's tasks of one
    # CPU each: the thread count changes the last bits of the sums), while the requeued job waits.
    straight = RunDir(tmp_path / "straight")
    straight.init(config, "smoke")
    subprocess.run(
        worker_command(Job(str(straight.path), "smoke"), tmp_path / "outcome.json", torchrun(2)),
        capture_output=True, check=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    (final,) = slurm.wait([outcome], store, max_poll_s=1)
    assert final.state == "done", final.message
    metrics = store.metrics(run.run_id)
    assert metrics["world_size"] == 2 and metrics == json.loads(straight.metrics_path.read_text())
    weights, straight_weights = (
        checkpoint.load(path)["model"] for path in (folder.checkpoint_path, straight.checkpoint_path)
    )
    assert all(torch.equal(weights[name], straight_weights[name]) for name in weights)  # bit for bit
    assert store.info(run.run_id)["requeues"] == 1 and slurm_states([urgent])[urgent].state == "COMPLETED"
    resumed = re.search(r"resuming .* from iteration (\d+)", " ".join(Path(info["slurm_log"]).read_text().split()))
    assert resumed and 0 < int(resumed[1]) < 15  # mid-training
