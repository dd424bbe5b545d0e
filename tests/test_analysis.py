"""Positives per GT under each assigner: a hand-made annotation file, then the real tiny COCO."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from atssrepro.analysis import assignment
from atssrepro.analysis.assignment import (
    STATIC_STRATEGIES,
    STRATEGIES,
    assignment_statistics,
    plot_positives,
    positives_reference,
    render_summary,
    summarize,
)
from atssrepro.config import AnchorConfig, ModelConfig
from atssrepro.errors import UserError
from atssrepro.model.anchors import feature_sizes, grid_anchors
from atssrepro.model.assign import assign, batched_iou

MODEL = ModelConfig()

# Images 1 and 2 (640 x 480) resize to 800 x 1066 and pad to 800 x 1088; image 3 (480 x 640) is
# their transpose. Image 4 has only a crowd box and image 5 none, so both are skipped.
LANDSCAPE_SCALE = (1066 / 640, 800 / 480)  # (x, y) resize factors
PORTRAIT_SCALE = (800 / 480, 1066 / 640)
HAND_MADE = {
    "images": [
        {"id": 1, "width": 640, "height": 480, "file_name": "1.jpg"},
        {"id": 2, "width": 640, "height": 480, "file_name": "2.jpg"},
        {"id": 3, "width": 480, "height": 640, "file_name": "3.jpg"},
        {"id": 4, "width": 640, "height": 480, "file_name": "4.jpg"},
        {"id": 5, "width": 640, "height": 480, "file_name": "5.jpg"},
    ],
    "annotations": [
        {"id": i, "image_id": image_id, "category_id": 1, "bbox": bbox, "iscrowd": crowd}
        for i, (image_id, bbox, crowd) in enumerate(
            [
                (1, [100, 100, 150, 120], 0),  # large
                (1, [400, 300, 20, 20], 0),  # small
                (1, [0, 0, 300, 300], 1),  # crowd: dropped
                (1, [600, 10, 0.5, 30], 0),  # too thin: dropped
                (1, [620, 400, 50, 50], 0),  # clipped to 20 x 50: small
                (2, [300, 200, 50, 50], 0),  # medium
                (3, [50, 50, 60, 40], 0),  # medium
                (3, [200, 300, 200, 250], 0),  # large
                (4, [10, 10, 100, 100], 1),  # crowd: image 4 has no usable box
            ],
            start=1,
        )
    ],
    "categories": [{"id": 1, "name": "thing"}],
}
# (image id, padded (h, w), resize factors, usable boxes xywh in original pixels, after clipping)
USABLE = [
    (1, (800, 1088), LANDSCAPE_SCALE, [[100, 100, 150, 120], [400, 300, 20, 20], [620, 400, 20, 50]]),
    (2, (800, 1088), LANDSCAPE_SCALE, [[300, 200, 50, 50]]),
    (3, (1088, 800), PORTRAIT_SCALE, [[50, 50, 60, 40], [200, 300, 200, 250]]),
]
SIZES = ["large", "small", "small", "medium", "medium", "large"]


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    path = tmp_path_factory.mktemp("analysis") / "instances.json"
    path.write_text(json.dumps(HAND_MADE))
    return path


@pytest.fixture(scope="module")
def hand_made_stats(hand_made):
    return assignment_statistics(hand_made, STATIC_STRATEGIES, MODEL)


def test_one_row_per_strategy_and_usable_box(hand_made_stats):
    stats = hand_made_stats
    assert len(stats) == len(STATIC_STRATEGIES) * 6
    assert list(stats["strategy"].unique()) == list(STATIC_STRATEGIES)
    for _, rows in stats.groupby("strategy"):
        assert list(zip(rows["image_id"], rows["gt_index"])) == [(1, 0), (1, 1), (1, 2), (2, 0), (3, 0), (3, 1)]
        assert list(rows["size"]) == SIZES


def test_scale_is_in_resized_pixels(hand_made_stats):
    small = hand_made_stats[(hand_made_stats["image_id"] == 1) & (hand_made_stats["gt_index"] == 1)]
    assert small["scale"].iloc[0] == pytest.approx(20 * math.sqrt(LANDSCAPE_SCALE[0] * LANDSCAPE_SCALE[1]), rel=1e-5)


def test_positive_counts_worked_out_by_hand(hand_made_stats):
    stats = hand_made_stats.set_index(["strategy", "image_id", "gt_index"])
    # The small box of image 1 spans x 666.3-699.6 and y 500-533.3 after resizing: the 4 x 4 P3
    # points at x, y = 8j + 4 inside it are all within 64 px of its sides, so FCOS takes all 16.
    assert stats.loc[("ssc", 1, 1), "num_positive"] == 16
    atss = stats.loc["atss"]
    assert (atss["num_positive"] >= 1).all()
    assert (atss["mean_iou"] > 0).all()


def test_batched_counts_equal_one_image_at_a_time(hand_made_stats):
    """Grouping images by padded size and padding their boxes changes no count and no IoU."""
    stats = hand_made_stats.set_index(["strategy", "image_id", "gt_index"])
    anchors_config = MODEL.anchors
    for image_id, padded_size, (sx, sy), boxes in USABLE:
        anchors, num_per_level = grid_anchors(
            feature_sizes(*padded_size),
            anchors_config.scale,
            anchors_config.aspect_ratios,
            anchors_config.scales_per_octave,
        )
        xyxy = torch.tensor([[x * sx, y * sy, (x + w) * sx, (y + h) * sy] for x, y, w, h in boxes])[None]
        mask = torch.ones(xyxy.shape[:2], dtype=torch.bool)
        ious = batched_iou(anchors, xyxy)[0]  # [N, G]
        for strategy in STATIC_STRATEGIES:
            config = dataclasses.replace(MODEL.assign, strategy=strategy)
            matched = assign(config, anchors, num_per_level, 1, xyxy, mask)[0]
            for g in range(len(boxes)):
                row = stats.loc[(strategy, image_id, g)]
                positive = matched == g
                assert row["num_positive"] == positive.sum().item(), (strategy, image_id, g)
                if positive.any():
                    assert row["mean_iou"] == pytest.approx(ious[positive, g].mean().item(), rel=1e-5)
                else:
                    assert math.isnan(row["mean_iou"])


def test_memory_cap_splits_batches_without_changing_results(hand_made, hand_made_stats, monkeypatch):
    monkeypatch.setattr(assignment, "MAX_BATCH_ELEMENTS", 1)  # every image in a batch of its own
    alone = assignment_statistics(hand_made, ["atss", "ssc"], MODEL)
    batched = hand_made_stats[hand_made_stats["strategy"].isin(["atss", "ssc"])].reset_index(drop=True)
    assert alone.equals(batched)


def test_max_images_keeps_the_first_images_with_a_box(hand_made):
    first = assignment_statistics(hand_made, ["atss"], MODEL, max_images=1)
    assert list(first["image_id"]) == [1, 1, 1]


def test_summary_and_markdown(hand_made_stats):
    summary = summarize(hand_made_stats, MODEL)
    assert len(summary) == len(STATIC_STRATEGIES) * 4
    assert list(summary["size"][:4]) == ["small", "medium", "large", "all"]
    assert list(summary["num_gt"][:4]) == [2, 2, 2, 6]
    atss = summary[summary["strategy"] == "atss"]
    assert (atss["reference"] == 0.2 * 9 * 5).all()
    assert summary[summary["strategy"] != "atss"]["reference"].isna().all()
    table = render_summary(summary).splitlines()
    assert len(table) == 2 + len(summary)
    assert table[0].startswith("| Strategy | Size | GTs |")


def test_reference_counts_anchors_per_location():
    retina = ModelConfig(anchors=AnchorConfig(scale=4.0, aspect_ratios=(0.5, 1.0, 2.0), scales_per_octave=3))
    assert positives_reference(retina) == pytest.approx(0.2 * 9 * 9 * 5)


def test_bad_input_is_a_user_error(tmp_path, hand_made):
    with pytest.raises(UserError, match="not found"):
        assignment_statistics(tmp_path / "missing.json", ["atss"], MODEL)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(UserError, match="not in COCO format"):
        assignment_statistics(tmp_path / "list.json", ["atss"], MODEL)
    with pytest.raises(UserError, match="unknown assignment strategy"):
        assignment_statistics(hand_made, ["atss", "fcos"], MODEL)
    with pytest.raises(UserError, match="no assignment strategy"):
        assignment_statistics(hand_made, [], MODEL)
    with pytest.raises(UserError, match="must be at least 1"):
        assignment_statistics(hand_made, ["atss"], MODEL, max_images=0)


@pytest.fixture(scope="module")
def tiny_stats(tiny_coco):
    # The first 25 of the 50 images (202 boxes) keep the test fast; all 50 give the same picture.
    return assignment_statistics(
        tiny_coco / "annotations" / "instances_val2017.json", STATIC_STRATEGIES, MODEL, max_images=25
    )


def test_tiny_coco_positives_per_size(tiny_stats):
    summary = summarize(tiny_stats, MODEL).set_index(["strategy", "size"])
    assert len(summary) == len(STATIC_STRATEGIES) * 4
    # The paper's 0.2 x k x L = 9: measured 8.9 here (8.8 on all 50 images).
    assert 4 <= summary.loc[("atss", "all"), "mean_positive"] <= 16
    for size in ("small", "medium", "large"):
        assert summary.loc[("atss", size), "no_positive_pct"] < 10


def test_tiny_coco_iou_assignment_favours_large_objects(tiny_coco):
    """With RetinaNet's 9 anchors per location, small boxes reach IoU 0.5 with few anchors.

    (With the single 8S anchor of ATSS, a box much smaller than 64 px lies inside many anchors
    with the same IoU, and the low-quality matches keep all these ties.)
    """
    retina = ModelConfig(anchors=AnchorConfig(scale=4.0, aspect_ratios=(0.5, 1.0, 2.0), scales_per_octave=3))
    ann_file = tiny_coco / "annotations" / "instances_val2017.json"
    stats = assignment_statistics(ann_file, ["iou"], retina, max_images=20)
    summary = summarize(stats, retina).set_index("size")
    # Measured 16.2 positives per small box against 27.0 per large one.
    assert summary.loc["small", "mean_positive"] < 0.75 * summary.loc["large", "mean_positive"]


def test_tiny_coco_plot(tiny_stats, tmp_path):
    path = tmp_path / "positives.png"
    plot_positives(tiny_stats, path, positives_reference(MODEL))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000
    assert not list(tmp_path.glob(".*.tmp"))


def test_prediction_aware_strategies_need_a_model(hand_made):
    with pytest.raises(UserError, match="tal, paa assign from the network's predictions: give a trained model"):
        assignment_statistics(hand_made, ["atss", "tal", "paa"], MODEL)


# ---- with a checkpoint: every assigner on the same model state, images and predictions


@pytest.fixture(scope="module")
def smoke_run(tiny_coco, tmp_path_factory):
    """A smoke model trained 2 iterations on 4 tiny COCO images (128 px): a run folder with its checkpoint."""
    from rich.console import Console

    from atssrepro import config as cfg
    from atssrepro.data.subset import make_coco_subset
    from atssrepro.engine.curves import Curves
    from atssrepro.engine.run_dir import RunDir
    from atssrepro.engine.train import train

    data = tmp_path_factory.mktemp("tiny4")
    make_coco_subset(tiny_coco, "train2017", 4, data)
    settings = [
        "data.train_short_side=[128, 128]", "data.max_size=192", "data.num_workers=0", "train.batch_size=2",
        "train.iterations=2", "train.lr_steps=[1]", "train.checkpoint_every=2",
    ]  # fmt: skip
    config = cfg.build_config(None, "smoke", settings, str(data))
    run = RunDir(tmp_path_factory.mktemp("run"))
    run.init(config, "smoke")
    with Curves(run.path) as curves:
        train(config, run, torch.device("cpu"), Console(quiet=True), curves)
    return run.path


def test_checkpoint_analysis_runs_every_strategy_and_static_ones_match_the_boxes_only_path(smoke_run, tiny_coco):
    from atssrepro.analysis.assignment import checkpoint_assignment_statistics
    from atssrepro.engine.run import model_from_checkpoint

    model, config = model_from_checkpoint(smoke_run / "checkpoint.pt", torch.device("cpu"))
    ann = tiny_coco / "annotations" / "instances_val2017.json"
    stats = checkpoint_assignment_statistics(model, ann, tiny_coco / "val2017", STRATEGIES, 128, 192, max_images=4)
    assert list(stats["strategy"].unique()) == list(STRATEGIES)
    assert stats["num_positive"].ge(0).all() and stats.groupby("strategy")["num_positive"].sum().gt(0).all()
    # The static assigners read boxes only: the same counts as without a model.
    static = assignment_statistics(ann, STATIC_STRATEGIES, config.model, 128, 192, max_images=4)
    ours = stats[stats["strategy"].isin(STATIC_STRATEGIES)].reset_index(drop=True)
    columns = ["strategy", "image_id", "gt_index", "size", "num_positive"]
    assert ours[columns].equals(static[columns])
    assert torch.allclose(torch.tensor(ours["scale"].to_numpy()), torch.tensor(static["scale"].to_numpy()))


def test_analyze_assignment_with_a_checkpoint_writes_every_strategy_side_by_side(smoke_run, tiny_coco, tmp_path):
    from atssrepro.cli.run_commands import _analysed_model

    from cli import atssrepro

    ann = str(tiny_coco / "annotations" / "instances_val2017.json")
    base = ["analyze", "assignment", "--ann", ann, "--out", str(tmp_path), "--max-images", "3"]
    result = atssrepro(*base, "--checkpoint", str(smoke_run))
    for strategy in STRATEGIES:
        assert f"| {strategy} | all |" in result.stdout
    assert (tmp_path / "positives.png").read_bytes()[:4] == b"\x89PNG"
    assert set(pd_read(tmp_path / "per_gt.csv")["strategy"]) == set(STRATEGIES)
    with pytest.raises(UserError, match=r"only model.assign.\* and data.\* can be set"):
        _analysed_model(smoke_run, ["model.anchors.scale=4"], "cpu")
    model, config = _analysed_model(smoke_run, ["model.assign.strategy=ota", "model.assign.ota.reg_weight=1.5"], "cpu")
    assert model.config.assign == config.model.assign and config.model.assign.ota.reg_weight == 1.5


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)
