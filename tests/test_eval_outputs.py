"""`atssrepro eval`: where the detections and metrics go, said in one line; a run's own are never lost or replaced."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from atssrepro.cli.common import metrics_in_percent
from atssrepro.engine.run import EvaluationFiles, data_tag
from atssrepro.engine.run_dir import RunDir

from cli import TINY, assert_one_line_error, atssrepro, metrics_of

FAULTS = Path(__file__).parent / "faults"
SHORT = [*TINY, "--set", "train.iterations=4", "--set", "train.checkpoint_every=2", "--set", "train.lr_steps=[3]"]


def wrote(result) -> str:
    """The line of stderr that says where the metrics went."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("wrote ") or "nothing written" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_eval_with_data_saves_into_the_run_or_beside_it(synth_coco: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = metrics_of(atssrepro("train", *SHORT, "--data", str(synth_coco), "--out", str(run), "--json"))
    own = {name: (run / name).read_bytes() for name in ("metrics.json", "detections.json")}

    # The run's own data, spelled otherwise (relative, trailing slash): its own files, rewritten.
    for name in own:
        (run / name).unlink()
    spelled = os.path.relpath(synth_coco, tmp_path) + "/"
    result = atssrepro("eval", "run", "--data", spelled, "--json", cwd=tmp_path)
    assert metrics_of(result) == trained
    assert wrote(result) == "wrote run/metrics.json and run/detections.json"
    assert {name: (run / name).read_bytes() for name in own} == own

    # Other data: beside the run's own files, named after it; the run's own are left as they were.
    other = tmp_path / "other data"
    shutil.copytree(synth_coco, other)
    val = other / "annotations" / "instances_val2017.json"
    dataset = json.loads(val.read_text())
    first = dataset["images"][0]["id"]
    images = dataset["images"][1:]
    annotations = [a for a in dataset["annotations"] if a["image_id"] != first]
    val.write_text(json.dumps({**dataset, "images": images, "annotations": annotations}))
    result = atssrepro("eval", str(run), "--data", str(other), "--json")
    tag = data_tag(str(other))
    assert tag.startswith("other_data-") and len(tag) == len("other_data-") + 8
    metrics = run / f"metrics.{tag}.json"
    assert wrote(result) == f"wrote {metrics} and {run / f'detections.{tag}.json'}"
    assert metrics_in_percent(json.loads(metrics.read_text())) == metrics_of(result)
    assert metrics_of(result)["num_images"] == len(images) < trained["num_images"]
    assert (run / f"detections.{tag}.json").is_file()
    assert {name: (run / name).read_bytes() for name in own} == own

    # A lone checkpoint has no run folder: nothing is written, and the line says so.
    result = atssrepro("eval", str(run / "checkpoint.pt"), "--data", str(other))
    assert wrote(result) == f"{run / 'checkpoint.pt'} is a checkpoint file, not a run folder: nothing written"

    # Data with other categories: the model's classes cannot be named by its ids.
    dropped = dataset["categories"][-1]["id"]
    categories = dataset["categories"][:-1]
    annotations = [a for a in annotations if a["category_id"] != dropped]
    val.write_text(json.dumps({**dataset, "images": images, "annotations": annotations, "categories": categories}))
    message = f"{val} has 5 categories, the model was trained on 6"
    assert_one_line_error(atssrepro("eval", str(run), "--data", str(other), check=False), message)
    predict = ["predict", str(run), "--images", str(other / "val2017"), "--info", str(val), "--out", str(tmp_path)]
    assert_one_line_error(atssrepro(*predict, check=False), message)


@pytest.mark.slow
def test_evaluating_an_unfinished_run_keeps_it_unfinished(synth_coco: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")])}
    stopped = atssrepro(
        "train", *SHORT, "--data", str(synth_coco), "--out", str(run), check=False,
        env={**env, "ATSSREPRO_TEST_FAULT": "after_checkpoint"},
    )  # fmt: skip
    assert stopped.returncode != 0 and "injected fault after a checkpoint" in stopped.stderr

    result = atssrepro("eval", str(run), "--json")
    assert wrote(result) == f"wrote {run / 'metrics.iter2.json'} and {run / 'detections.iter2.json'}"
    assert metrics_in_percent(json.loads((run / "metrics.iter2.json").read_text())) == metrics_of(result)
    assert not (run / "metrics.json").exists()
    # So the run still trains to its end, instead of counting as finished at iteration 2.
    finished = metrics_of(atssrepro("train", *SHORT, "--data", str(synth_coco), "--out", str(run), "--json"))
    assert metrics_in_percent(json.loads((run / "metrics.json").read_text())) == finished
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["iter"] == 4


def test_evaluation_file_names(tmp_path: Path) -> None:
    run = RunDir(tmp_path, tta=True)
    assert EvaluationFiles.of(run) == EvaluationFiles(tmp_path / "detections_tta.json", tmp_path / "metrics_tta.json")
    files = EvaluationFiles.of(run, "coco-0123abcd.iter5")
    assert files.metrics == tmp_path / "metrics_tta.coco-0123abcd.iter5.json"
    assert files.detections == tmp_path / "detections_tta.coco-0123abcd.iter5.json"
    # However the root is spelled, the same tag.
    assert data_tag(str(tmp_path)) == data_tag(str(tmp_path) + "/") == data_tag(f"{tmp_path}/../{tmp_path.name}")
