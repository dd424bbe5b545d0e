"""A run's inputs are checked before anything starts or is written (issue 17, item 4): a wrong
``--data`` or ``--results`` is one line, exit code 2, and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from atssrepro import config as cfg
from atssrepro.engine.preflight import data_problem, folder_problem
from atssrepro.engine.run_dir import RunDir

from cli import TINY, assert_one_line_error, atssrepro

SMOKE_FCOS = ["table3", "--rows", "fcos", "--preset", "smoke"]


def without(synth_coco: Path, tmp_path: Path, *parts: str) -> Path:
    """A copy of the dataset with ``parts`` (files or folders) removed."""
    data = tmp_path / "data"
    shutil.copytree(synth_coco, data)
    for part in parts:
        path = data / part
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return data


def test_run_with_a_wrong_data_root_is_one_line_and_stores_nothing(tmp_path):
    results = tmp_path / "results"
    ran = atssrepro("run", *SMOKE_FCOS, "--data", "/wrong", "--results", str(results), check=False)
    assert_one_line_error(ran, "data root /wrong (data.root) not found", "pass --data ROOT")
    assert "training" not in ran.stderr and not results.exists()  # no failed run in the store


def test_a_missing_val2017_stops_run_and_train_before_the_first_iteration(synth_coco, tmp_path):
    data = without(synth_coco, tmp_path, "val2017")
    results = tmp_path / "results"
    ran = atssrepro("run", *SMOKE_FCOS, "--data", str(data), "--results", str(results), check=False)
    assert_one_line_error(ran, f"lacks {data / 'val2017'} (data.val_images)", "or set data.val_images")
    assert not results.exists()
    out = tmp_path / "run"
    trained = atssrepro("train", *TINY, "--data", str(data), "--out", str(out), check=False)
    assert_one_line_error(trained, f"{data / 'val2017'} (data.val_images)")
    assert not out.exists()  # the corrected command finds no folder in its way


def test_dry_run_warns_in_one_line_and_still_plans(tmp_path):
    planned = atssrepro("run", *SMOKE_FCOS, "--data", str(tmp_path / "nowhere"), "--dry-run", "--json")
    warnings = planned.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: data root") and "run stops here" in warnings[0]
    assert json.loads(planned.stdout)["rows"] == ["table3/fcos"]


@pytest.mark.parametrize("command", ["status", "report", "list", "run table3 --preset smoke", "cancel table3"])
def test_a_results_store_that_is_a_file_is_one_line(tmp_path, command):
    store = tmp_path / "a_file"
    store.write_text("x")
    ran = atssrepro(*command.split(), "--results", str(store), check=False)
    assert_one_line_error(ran, f"--results {store}: is a file, not a folder")
    assert store.read_text() == "x"


def test_an_output_folder_under_a_file_is_refused_before_training(synth_coco, tmp_path):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "run"
    trained = atssrepro("train", *TINY, "--data", str(synth_coco), "--out", str(out), check=False)
    assert_one_line_error(trained, f"--out {out}: lies under the file {tmp_path / 'a_file'}")


def test_a_broken_validation_file_stops_training_before_it_starts_and_the_fix_reuses_the_folder(synth_coco, tmp_path):
    data = without(synth_coco, tmp_path, "annotations/instances_val2017.json")
    (data / "annotations" / "instances_val2017.json").write_text('{"images": []}')
    out = tmp_path / "run"
    fast = [*TINY, "--set", "train.iterations=2", "--set", "train.lr_steps=[1]", "--set", "data.num_workers=0"]
    failed = atssrepro("train", *fast, "--data", str(data), "--out", str(out), check=False)
    assert_one_line_error(failed, "instances_val2017.json")
    run = RunDir(out)
    assert run.record().state == "failed" and not run.log_path.exists() and not run.checkpoint_path.exists()
    # The corrected command, on other data (another run id), takes the never-trained folder over
    # (what it does first, here in this process: training it again would take 10 s).
    corrected = cfg.with_data_root(run.read_config(), str(synth_coco))
    run.init(corrected, "smoke")
    assert run.read_config() == corrected and run.record().state == "pending"


def test_data_problem_names_each_missing_input_and_folder_problem_each_obstacle(tmp_path, coco_layout):
    data = cfg.with_data_root(cfg.Config(), str(coco_layout)).data
    assert data_problem(data) is None
    (coco_layout / "annotations" / "instances_train2017.json").unlink()
    (coco_layout / "val2017").rmdir()
    problem = data_problem(data)
    assert f"{coco_layout / 'annotations' / 'instances_train2017.json'} (data.train_ann)" in problem
    assert (
        f"{coco_layout / 'val2017'} (data.val_images)" in problem
        and "or set data.train_ann, data.val_images" in problem
    )
    assert data_problem(data, ("val",)).count("(data.") == 1  # an evaluation reads the validation split only
    (tmp_path / "file").write_text("x")
    assert folder_problem(tmp_path / "file", writable=False) == "is a file, not a folder"
    assert folder_problem(tmp_path / "file" / "a" / "b", writable=True) == f"lies under the file {tmp_path / 'file'}"
    assert folder_problem(tmp_path / "new" / "store", writable=True) is None
