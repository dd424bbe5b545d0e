"""The command line: error handling and the commands that need no training."""

from __future__ import annotations

import json

from cli import TINY, assert_one_line_error, atssrepro, metrics_of


def test_config_prints_resolved_toml_with_id():
    result = atssrepro("config", "--preset", "smoke", "--set", "model.assign.topk=7")
    assert result.stdout.startswith("# id: ")
    assert "topk = 7" in result.stdout and 'name = "resnet18"' in result.stdout


def test_unknown_key_is_a_one_line_error():
    assert_one_line_error(
        atssrepro("config", "--set", "train.iterationz=3", check=False), "did you mean 'train.iterations'"
    )


def test_missing_dataset_is_a_one_line_error(tmp_path):
    result = atssrepro("train", *TINY, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), check=False)
    assert_one_line_error(result, "instances_train2017.json", "--data")


def test_eval_scores_any_results_file(tiny_coco, tmp_path):
    ann = tiny_coco / "annotations" / "instances_val2017.json"
    gt = json.loads(ann.read_text())
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(detections))
    for backend in ("pycocotools", "faster-coco-eval"):
        metrics = metrics_of(
            atssrepro("eval", "--detections", str(path), "--ann", str(ann), "--backend", backend, "--json")
        )
        assert metrics["unit"] == "percent" and metrics["stats"]["AP"] > 99 and set(metrics["stats"]) >= {"AP50", "ARl"}
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 1}]')
    assert_one_line_error(atssrepro("eval", "--detections", str(bad), "--ann", str(ann), check=False), "bad.json")


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    assert_one_line_error(atssrepro("eval", str(checkpoint), check=False), "checkpoint.pt", "corrupt")


def test_data_synth_writes_a_coco_dataset(tmp_path):
    atssrepro("data", "synth", "--out", str(tmp_path), "--train-images", "2", "--val-images", "1")
    assert len(json.loads((tmp_path / "annotations" / "instances_val2017.json").read_text())["images"]) == 1


def test_analyze_assignment_on_tiny_coco(tiny_coco, tmp_path):
    ann = tiny_coco / "annotations" / "instances_val2017.json"
    result = atssrepro(
        "analyze", "assignment", "--ann", str(ann), "--out", str(tmp_path), "--max-images", "10",
        "--strategy", "atss", "--strategy", "iou",
    )  # fmt: skip
    assert "| atss | all |" in result.stdout and "| iou | small |" in result.stdout
    assert (tmp_path / "positives.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "summary.csv").read_text().startswith("strategy,size,num_gt")


def test_executor_options_that_do_not_fit_are_one_line_errors(tmp_path):
    results = ["--results", str(tmp_path / "results")]
    assert_one_line_error(atssrepro("run", "table4", "--gpus", "0;1", *results, check=False), "--gpus '0;1'")
    assert_one_line_error(atssrepro("run", "table4", "-e", "slurm", *results, check=False), "needs --profile")
    assert_one_line_error(atssrepro("cancel", "../etc", *results, check=False), "neither a table")
    assert not (tmp_path / "results").exists()


def test_config_output_fed_back_with_config_gives_the_same_id(tmp_path):
    # A data root longer than any terminal line: the output must not wrap.
    data = str(tmp_path / ("a-long-folder-name-" * 12) / "coco")
    printed = atssrepro("config", "--preset", "smoke", "--set", "model.assign.topk=7", "--data", data).stdout
    saved = tmp_path / "config.toml"
    saved.write_text(printed)
    again = atssrepro("config", "--config", str(saved)).stdout
    assert again == printed  # the same "# id: ..." line, and the same config
    assert f'root = "{data}"' in printed
