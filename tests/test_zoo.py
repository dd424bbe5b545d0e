"""Evaluation-only rows (the official model zoo) and the pretrained-weights check before runs start."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import submitit
from rich.console import Console

from atssrepro import config as cfg
from atssrepro.errors import UserError
from atssrepro.harness.executors import QueueExecutor, fetch_pretrained
from atssrepro.harness.plan import plan
from atssrepro.harness.specs import load_table, parse_table
from atssrepro.harness.store import Store

from cli import atssrepro

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "ATSS_TABLES.md"


def test_zoo_spec_has_every_official_model_with_its_published_minival_ap():
    zoo = load_table("zoo")
    assert [row.label for row in zoo.rows] == [
        "ATSS_R_50_FPN_1x", "ATSS_dcnv2_R_50_FPN_1x", "ATSS_R_101_FPN_2x", "ATSS_dcnv2_R_101_FPN_2x",
        "ATSS_X_101_32x8d_FPN_2x", "ATSS_dcnv2_X_101_32x8d_FPN_2x", "ATSS_X_101_64x4d_FPN_2x",
        "ATSS_dcnv2_X_101_64x4d_FPN_2x",
    ]  # fmt: skip
    assert all(row.evaluation_only and row.checkpoint == f"{row.label}.pth" for row in zoo.rows)
    if PAPER.is_file():  # the facts file: "| ATSS_R_50_FPN_1x | No | 44ms | 39.3 | 39.3 |"
        for row in zoo.rows:
            line = re.search(rf"^\| {row.label} \| (\w+) \| \d+ms \| ([\d.]+) \|", PAPER.read_text(), re.M)
            assert float(line[2]) == row.published["AP"], row.label
            assert line[1] == row.info["Multi-scale training"]


def test_zoo_rows_plan_one_evaluation_per_checkpoint_apart_from_trained_runs(tmp_path):
    zoo = load_table("zoo")
    runs = plan([zoo], "paper", seeds=3, zoo_dir=tmp_path)
    assert len(runs) == 8 and all(run.seed == 0 and run.cost == 0 for run in runs)
    assert [run.checkpoint for run in runs] == [tmp_path / row.checkpoint for row in zoo.rows]
    r50 = runs[0].config
    assert r50.model.backbone.weights == "" and r50.model.backbone.style == "msra"
    dcn_x101 = runs[-1].config.model
    assert dcn_x101.backbone.name == "resnext101_64x4d" and dcn_x101.backbone.dcn and dcn_x101.head.dcn
    # Not the id of a run trained from the same config: the official weights get their own folder.
    assert runs[0].run_id != cfg.config_id(r50)
    assert [r.run_id for r in plan([zoo], "paper")] == [r.run_id for r in runs]  # --zoo-dir changes no id
    with pytest.raises(UserError, match="evaluates an official checkpoint as it is: use --preset paper"):
        plan([zoo], "smoke")


def test_zoo_rows_are_the_built_in_configs_of_the_zoo_models():
    """The config each row evaluates with is the one `atssrepro import official --config NAME` takes."""
    zoo = load_table("zoo")
    for row, run in zip(zoo.rows, plan([zoo], "paper")):
        name = row.label.lower().replace("r_50", "r50").replace("r_101", "r101").replace("x_101", "x101")
        builtin = cfg.build_config(name, "paper", ["model.backbone.weights="])
        assert cfg.config_id(builtin) == cfg.config_id(run.config), name


def test_checkpoint_field_is_validated(tmp_path):
    base = {"title": "Zoo", "caption": "c", "metrics": ["AP"]}
    for row, message in [
        ({"id": "a", "label": "A", "checkpoint": "/abs/a.pth"}, "must be a file name inside --zoo-dir"),
        ({"id": "a", "label": "A", "checkpoint": "../a.pth"}, "must be a file name inside --zoo-dir"),
        ({"id": "a", "label": "A", "checkpoint": 3}, "checkpoint = 3 is not valid; expected a str"),
        ({"id": "a", "label": "A", "checkpoint": "a.pth", "reference_only": True}, "reference_only row has no"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_table({**base, "rows": [row]}, tmp_path / "zoo.toml")


@pytest.mark.slow
def test_missing_checkpoints_fail_their_rows_only_and_status_shows_them(tmp_path, coco_layout):
    results = tmp_path / "results"
    data = coco_layout  # the runs never read it, but run checks that it is there before they start
    common = ["--rows", "r50_1x", "--rows", "dcnv2_r50_1x", "--results", str(results)]
    wide = {**os.environ, "COLUMNS": "500"}  # one progress line per run
    zoo_dir = str(tmp_path / "zoo")
    ran = atssrepro("run", "zoo", "--zoo-dir", zoo_dir, "--data", str(data), *common, check=False, env=wide)
    assert ran.returncode == 1, ran.stderr
    assert "0 of 2 runs finished" in ran.stderr and "Traceback" not in ran.stderr
    assert ran.stderr.count("ATSS_R_50_FPN_1x.pth not found") == 2  # the progress line and the summary
    status = atssrepro("status", "zoo", "--json", "--data", str(data), "--results", str(results))
    status = status.stdout.splitlines()
    status = [json.loads(line) for line in status]
    by_rows = {tuple(s["rows"]): s for s in status}
    missing = by_rows[("zoo/dcnv2_r50_1x",)]
    assert missing["state"] == "failed" and "ATSS_dcnv2_R_50_FPN_1x.pth not found" in missing["message"]
    assert by_rows[("zoo/r101_2x",)]["state"] == "not run"
    cancelled = atssrepro("cancel", "zoo", "--data", str(data), "--results", str(results))
    assert "cancelled 0 job(s)" in cancelled.stderr
    no_dir = atssrepro("run", "zoo", "--data", str(data), *common, check=False)
    assert no_dir.returncode == 2 and "give --zoo-dir DIR" in no_dir.stderr


# --- pretrained weights are found before anything starts -----------------------------------------


def _spec_with_weights(tmp_path: Path, weights: str) -> Path:
    spec = tmp_path / "weights_table.toml"
    spec.write_text(
        'title = "W"\ncaption = "c"\nmetrics = ["AP"]\n[[rows]]\nid = "a"\nlabel = "A"\n'
        f'config = {{ model.backbone.weights = "{weights}", model.backbone.name = "resnet50" }}\n'
    )
    return spec


@pytest.mark.slow
def test_missing_weights_stop_run_and_train_before_anything_starts_or_is_submitted(tmp_path, synth_coco):
    missing = tmp_path / "nowhere" / "R-50.pkl"
    spec = _spec_with_weights(tmp_path, str(missing))
    results = tmp_path / "results"
    for executor in (["--executor", "local"], ["--executor", "slurm", "--profile", "local"]):
        ran = atssrepro("run", str(spec), "--data", str(synth_coco), "--results", str(results), *executor, check=False)
        assert ran.returncode == 2, ran.stderr
        assert f"model.backbone.weights: file {missing} not found" in ran.stderr, ran.stderr
        assert not results.exists()  # no run folder, no snapshot, no job
    out = tmp_path / "run"
    trained = atssrepro("train", "--set", f"model.backbone.weights={missing}", "--data", str(synth_coco),
                        "--out", str(out), check=False)  # fmt: skip
    assert trained.returncode == 2 and f"file {missing} not found" in trained.stderr
    assert not out.exists()  # checked before the run folder is written


def test_offline_catalog_weights_stop_the_queue_before_it_starts(tmp_path, monkeypatch, coco_layout):
    from atssrepro.model import pretrained

    monkeypatch.setenv("ATSSREPRO_WEIGHTS", str(tmp_path / "cache"))
    entry = pretrained.CATALOG["MSRA/R-50"]
    offline = pretrained.CatalogEntry(entry.name, (tmp_path / "offline.pkl").as_uri(), entry.backbone)
    monkeypatch.setitem(pretrained.CATALOG, "MSRA/R-50", offline)
    spec = load_table(_spec_with_weights(tmp_path, "MSRA/R-50"))
    runs = plan([spec], "paper", data_root=str(coco_layout))
    store = Store(tmp_path / "results")
    with pytest.raises(UserError, match=rf"put it at {re.escape(str(tmp_path / 'cache' / 'MSRA' / 'R-50.pkl'))}"):
        QueueExecutor(Console(quiet=True), ["cpu"]).execute(runs, store)
    assert not store.root.exists()
    # A run that resumes from its checkpoint needs no ImageNet weights.
    store.run(runs[0].run_id).path.mkdir(parents=True)
    store.run(runs[0].run_id).checkpoint_path.write_bytes(b"")
    fetch_pretrained(runs, store, force=False)


# --- end to end: official-layout weights imported and evaluated, then reported -------------------

OFFICIAL_REF = Path(__file__).resolve().parents[2] / "shared" / "official_ref"


@pytest.mark.slow
def test_zoo_rows_import_official_checkpoints_evaluate_them_and_report_them(tmp_path, tiny_coco):
    """An R-50 checkpoint in the official trainer's layout (weights regenerated by the official
    reference's make_weights.py), evaluated on 3 COCO images at 256 pixels; a second row's file is missing."""
    if not (OFFICIAL_REF / "make_weights.py").is_file():
        pytest.skip("../shared/official_ref absent")
    import subprocess
    import sys

    from atssrepro.data.subset import make_coco_subset

    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    subprocess.run(
        [sys.executable, str(OFFICIAL_REF / "make_weights.py"), str(OFFICIAL_REF / "keys" / "ATSS_BOX.json"),
         "--seed", "1", "--layout", "checkpoint", "--out", str(zoo_dir / "ATSS_R_50_FPN_1x.pth")],
        check=True, capture_output=True,
    )  # fmt: skip
    data = tmp_path / "coco"
    make_coco_subset(tiny_coco, "val2017", 3, data)
    spec = tmp_path / "tiny_zoo.toml"
    spec.write_text(
        'title = "Tiny zoo"\ncaption = "c"\nmetrics = ["AP", "AP50"]\n'
        "[base]\ndata.test_short_side = 256\ndata.max_size = 320\ndata.num_workers = 0\n"
        '[[rows]]\nid = "r50"\nlabel = "R-50"\ncheckpoint = "ATSS_R_50_FPN_1x.pth"\npublished = { AP = 39.3 }\n'
        '[[rows]]\nid = "dcn"\nlabel = "DCN"\ncheckpoint = "ATSS_dcnv2_R_50_FPN_1x.pth"\npublished = { AP = 43.2 }\n'
        "config = { model.backbone.dcn = true, model.head.dcn = true }\n"
    )
    results = tmp_path / "results"
    where = ["--data", str(data), "--results", str(results)]
    ran = atssrepro("run", str(spec), "--zoo-dir", str(zoo_dir), *where, check=False)
    assert ran.returncode == 1 and "1 of 2 runs finished" in ran.stderr, ran.stderr
    report = json.loads(atssrepro("report", str(spec), "--format", "json", *where).stdout)
    r50, dcn = report["tables"][0]["rows"]
    (folder,) = [p for p in results.iterdir() if (p / "metrics.json").is_file()]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["num_images"] == 3
    assert r50["state"] == "done" and r50["metrics"]["AP"]["n"] == 1
    assert r50["metrics"]["AP"]["mean"] == pytest.approx(100 * metrics["stats"]["AP"], abs=1e-3)
    assert r50["metrics"]["AP"]["published"] == 39.3
    delta = r50["metrics"]["AP"]["delta"]
    assert r50["verdict"] == ("reproduced" if abs(delta) <= 0.3 else "marginal" if abs(delta) <= 0.6 else "off")
    assert dcn["state"] == "failed" and dcn["verdict"] == "not run"
    info = json.loads((folder / "run.json").read_text())
    assert info["state"] == "done" and info["imported_from"] == str((zoo_dir / "ATSS_R_50_FPN_1x.pth").resolve())
    assert "training" not in ran.stderr and not (folder / "log.jsonl").exists()  # nothing trained
    # Done rows are not evaluated again.
    again = atssrepro("run", str(spec), "--zoo-dir", str(zoo_dir), "--rows", "r50", *where)
    assert "done already" in again.stderr


def test_on_slurm_missing_checkpoints_fail_their_rows_and_nothing_is_submitted(tmp_path, coco_layout):
    from atssrepro.harness.slurm import SlurmExecutor
    from atssrepro.harness.slurm_profile import load_profile

    runs = plan([load_table("zoo")], "paper", rows=["r50_1x", "r101_2x"], data_root=str(coco_layout), zoo_dir=tmp_path)
    store = Store(tmp_path / "results")
    outcomes = SlurmExecutor(Console(quiet=True), load_profile("local")).execute(runs, store)
    assert [o.state for o in outcomes] == ["failed", "failed"]
    assert outcomes[1].message.startswith(f"ATSS_R_101_FPN_2x.pth not found in {tmp_path}")
    assert store.info(runs[1].run_id)["message"] == outcomes[1].message
    assert not (store.root / ".snapshots").exists()  # nothing submitted


def test_a_slurm_job_of_an_evaluation_only_run_imports_once_then_evaluates(tmp_path, monkeypatch):
    from atssrepro.engine.run_dir import RunDir
    from atssrepro.harness import runner

    calls = []
    monkeypatch.setattr(
        runner, "import_official_checkpoint", lambda checkpoint, config, out: calls.append(("import", checkpoint, out))
    )
    monkeypatch.setattr(runner, "evaluate_run", lambda path, console, tta=False: calls.append(("eval", path, tta)))
    run = RunDir(tmp_path / "run")
    run.init(cfg.Config(), "paper")
    runner.import_and_evaluate(run, tmp_path / "official.pth", Console(quiet=True))
    assert calls == [("import", tmp_path / "official.pth", run.path), ("eval", run.path, False)]
    run.checkpoint_path.write_bytes(b"")  # imported by an earlier start whose evaluation failed
    calls.clear()
    runner.import_and_evaluate(run, tmp_path / "official.pth", Console(quiet=True))
    assert calls == [("eval", run.path, False)]


def test_every_slurm_job_keeps_submitits_requeue_hook(tmp_path):
    """submitit requeues a preempted job through its ``checkpoint`` method: no attribute may shadow it."""
    from atssrepro.harness.runner import Job
    from atssrepro.harness.slurm_job import TrainJob

    for official in ("", str(tmp_path / "official.pth")):
        job = TrainJob(Job(str(tmp_path / "run"), "paper", False, official), str(tmp_path))
        requeued = job.checkpoint()
        assert isinstance(requeued, submitit.helpers.DelayedSubmission) and requeued.function is job


def test_an_evaluation_only_run_whose_import_fails_is_recorded_as_failed(tmp_path, monkeypatch):
    """Training records its own failures; an import or evaluation that fails is recorded by the runner."""
    from atssrepro.engine.run_dir import RunDir
    from atssrepro.engine.run_state import RunState
    from atssrepro.errors import UserError
    from atssrepro.harness import runner

    def refuse(checkpoint, config, out):
        raise UserError(f"{checkpoint}: not a readable torch checkpoint")

    monkeypatch.setattr(runner, "import_official_checkpoint", refuse)
    run = RunDir(tmp_path / "run")
    run.init(cfg.Config(), "paper")
    job = runner.Job(str(run.path), "paper", official_checkpoint=str(tmp_path / "broken.pth"))
    outcome = runner.execute_job(job, Console(quiet=True))
    assert outcome.state is RunState.FAILED and "broken.pth: not a readable torch checkpoint" in outcome.message
    assert run.info()["state"] == "failed" and run.info()["message"] == outcome.message
