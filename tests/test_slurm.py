"""Slurm: profiles, and runs submitted to a real cluster (slurm/start_local_cluster.sh).

The cluster tests train on the synthetic dataset in jobs of the local one-node cluster and are
skipped where no cluster with a ``debug`` partition answers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console
from submitit.slurm.slurm import SlurmJob

from atssrepro import config as cfg
from atssrepro.engine.run import execute
from atssrepro.engine.run_dir import RunDir
from atssrepro.errors import UserError
from atssrepro.harness.plan import PlannedRun, plan, resolve_row
from atssrepro.harness.slurm import PROFILE_DIR, SlurmExecutor, load_profile, rendezvous_port, slurm_states
from atssrepro.harness.specs import load_table
from atssrepro.harness.store import Store

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
        ("nodes = 0", "nodes = 0 must be >= 1"),
        ("setup = 3", "setup = 3 is not valid"),
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
    reason = _why_no_cluster()
    if reason:
        pytest.skip(reason)


def executor(**kwargs) -> SlurmExecutor:
    return SlurmExecutor(Console(stderr=True), load_profile("local"), **kwargs)


def wait_for(condition, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_table_row_trains_on_slurm_from_a_snapshot_of_the_code(cluster, synth_coco, tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    for name in ("atssrepro", "tables"):
        shutil.copytree(REPO / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(synth_coco.parent)  # a relative data root resolves where the runs were submitted
    runs = plan([load_table("table4")], "smoke", rows=["k3"], data_root=synth_coco.name)
    store = Store(tmp_path / "results")
    slurm = executor(code_root=checkout)

    (outcome,) = slurm.execute(runs, store)
    assert outcome.state == "submitted"
    # Editing the checkout after the submission changes nothing in the job.
    (checkout / "atssrepro" / "engine" / "run.py").write_text("raise RuntimeError('edited after submission')\n")
    job_id = store.info(runs[0].run_id)["slurm_job_id"]
    assert outcome.message == f"job {job_id}" and job_id in slurm_states([job_id])
    assert slurm.execute(runs, store)[0].state == "busy"  # queued already: not submitted twice

    (final,) = slurm.wait([outcome], store, poll_s=1)
    assert final.state == "done", final.message
    info = store.info(runs[0].run_id)
    assert info["state"] == "done" and info["slurm_job_id"] == job_id and info["requeues"] == 0
    assert Path(info["code"]) == Path(info["snapshot"]) and Path(info["snapshot"]).parent == store.root / ".snapshots"
    assert store.metrics(runs[0].run_id)["num_images"] == 4
    assert slurm.execute(runs, store)[0].state == "skipped"


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_ends_as_if_never_interrupted(cluster, synth_coco, tmp_path):
    spec = load_table("table4")
    k3 = next(row for row in spec.rows if row.id == "k3")
    config = resolve_row(spec, k3, "smoke", 0, str(synth_coco))
    small = {"data": {"train_short_side": [96, 96], "test_short_side": 96, "max_size": 160}}
    config = cfg.apply(config, {**small, "train": {"iterations": 15, "checkpoint_every": 5}}, "test")
    run = PlannedRun(cfg.config_id(config), config, "smoke", 0)
    store = Store(tmp_path / "results")
    slurm = executor()
    folder = store.run(run.run_id)

    (outcome,) = slurm.execute([run], store)
    wait_for(folder.checkpoint_path.exists, "the first checkpoint")
    info = store.info(run.run_id)
    SlurmJob(folder=Path(info["slurm_log"]).parent, job_id=info["slurm_job_id"])._interrupt()  # fake preemption
    wait_for(lambda: store.info(run.run_id).get("requeues", 0) >= 1, "the requeue", timeout_s=60)
    assert not folder.metrics_path.exists()

    # The same run, uninterrupted, while the requeued job waits for its turn.
    straight = execute(config, RunDir(tmp_path / "straight"), "smoke", Console(stderr=True))
    (final,) = slurm.wait([outcome], store, poll_s=1)
    assert final.state == "done", final.message
    assert store.metrics(run.run_id) == straight
    assert "resuming" in Path(info["slurm_log"]).read_text()
