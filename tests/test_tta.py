"""Soft box voting and multi-scale, flipped test-time augmentation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from atssrepro import config as cfg
from atssrepro.data.coco import CocoDetection, resized_size
from atssrepro.engine.evaluate import coco_results, predict
from atssrepro.engine.tta import TTAConfig, _merge, _passes, _to_original, predict_tta
from atssrepro.errors import UserError
from atssrepro.model.box_voting import soft_vote
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.postprocess import Detections

CPU = torch.device("cpu")


def vote(boxes: list[list[float]], scores: list[float], labels: list[int]) -> tuple[torch.Tensor, ...]:
    return soft_vote(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.int64),
    )


def assert_voted(got: tuple[torch.Tensor, ...], boxes: list[list[float]], scores: list[float], labels: list[int]):
    torch.testing.assert_close(got[0], torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    torch.testing.assert_close(got[1], torch.tensor(scores, dtype=torch.float32))
    assert got[2].tolist() == labels


# soft_vote, on hand-worked cases. Boxes 10 high: the IoU of [0, 0, 10, 10] and [0, 0, 10, 11] is 10/11.


def test_overlapping_boxes_merge_and_the_lower_one_is_kept_decayed() -> None:
    got = vote([[0, 0, 10, 11], [0, 0, 10, 10]], [0.6, 0.9], [2, 2])
    # score-weighted mean: y2 = (0.9 * 10 + 0.6 * 11) / 1.5 = 10.4; decayed: 0.6 * (1 - 10/11) = 0.0545
    assert_voted(got, [[0, 0, 10, 10.4], [0, 0, 10, 11]], [0.9, 0.6 / 11], [2, 2])


def test_a_decayed_score_under_the_threshold_is_dropped() -> None:
    got = vote([[0, 0, 10, 10], [0, 0, 10, 11]], [0.9, 0.5], [0, 0])  # 0.5 * (1 - 10/11) = 0.045
    assert_voted(got, [[0, 0, 10, 10 + 0.5 / 1.4]], [0.9], [0])


def test_boxes_of_different_classes_or_little_overlap_never_merge() -> None:
    got = vote([[0, 0, 10, 10], [0, 0, 10, 11]], [0.9, 0.6], [0, 1])
    assert_voted(got, [[0, 0, 10, 10], [0, 0, 10, 11]], [0.9, 0.6], [0, 1])
    got = vote([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.6], [0, 0])  # IoU 1/3
    assert_voted(got, [[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.6], [0, 0])


def test_merged_boxes_leave_the_pool() -> None:
    # IoU(a, b) = 9/11 and IoU(b, c) = 8.5/11.5 reach 0.66, IoU(a, c) = 0.6 does not: b goes with a,
    # so c, left alone, is not merged with b.
    a, b, c = [0, 0, 10, 10], [1, 0, 11, 10], [2.5, 0, 12.5, 10]
    got = vote([c, b, a], [0.7, 0.8, 0.9], [0, 0, 0])
    assert_voted(got, [[0.8 / 1.7, 0, 10 + 0.8 / 1.7, 10], c, b], [0.9, 0.7, 0.8 * 2 / 11], [0, 0, 0])


def test_a_lone_box_and_no_box() -> None:
    assert_voted(vote([[1, 2, 3, 4]], [0.3], [5]), [[1, 2, 3, 4]], [0.3], [5])
    assert_voted(vote([], [], []), [], [], [])


# TTAConfig


def test_tta_defaults_are_the_official_settings() -> None:
    tta = TTAConfig()
    assert tta.scales == (400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800)
    assert tta.max_size == 3000 and tta.flip and tta.vote_iou == 0.66
    assert tta.detections_per_image == 1000 and tta.large_scale_from == 800
    assert [list(r) for r in tta.scale_ranges] == [
        [96, 10000], [96, 10000], [64, 10000], [64, 10000], [64, 10000], [0, 10000],
        [0, 10000], [0, 256], [0, 256], [0, 192], [0, 192], [0, 96],
    ]  # fmt: skip


def test_scales_below_800_keep_the_test_max_size() -> None:
    # bbox_aug_vote.py: "if scale < 800: max_size = cfg.INPUT.MAX_SIZE_TEST"
    passes = _passes(cfg.Config(), TTAConfig())
    caps = {p.short_side: p.max_size for p in passes}
    assert caps == {
        800: 1333, 400: 1333, 500: 1333, 600: 1333, 640: 1333, 700: 1333,
        900: 3000, 1000: 3000, 1100: 3000, 1200: 3000, 1300: 3000, 1400: 3000, 1800: 3000,
    }  # fmt: skip
    assert [p.flip for p in passes] == [False, True] * 13


def test_scale_range_bounds_are_strict_on_the_area() -> None:
    tta_pass = _passes(cfg.Config(), TTAConfig(scales=(400,), scale_ranges=((8, 16),)))[2]
    # areas 64 (= 8^2, out), 8 x 8.5 (in), 255 (in), 16 x 16 (= 16^2, out)
    boxes = torch.tensor([[0, 0, 8, 8], [0, 0, 8, 8.5], [0, 0, 15, 17], [0, 0, 16, 16]], dtype=torch.float32)
    det = Detections(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 1, 2, 3]))
    size = torch.tensor([400, 400])
    kept = _to_original(det, size, size, tta_pass)
    assert kept.labels.tolist() == [1, 2]


def test_voted_detections_are_capped_at_the_kth_score_with_ties() -> None:
    # 1200 disjoint boxes of one class: the official cap keeps the 1000 best, and every box tied
    # with the 1000th score.
    n = 1200
    boxes = torch.tensor([[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(n)])
    scores = torch.linspace(0.9, 0.1, n)
    found = [Detections(boxes, scores, torch.zeros(n, dtype=torch.int64))]
    assert len(_merge(found, TTAConfig(), 0.05)[1]) == 1000
    tied = scores.clone()
    tied[995:1010] = tied[999]
    kept = _merge([Detections(boxes, tied, torch.zeros(n, dtype=torch.int64))], TTAConfig(), 0.05)[1]
    assert len(kept) == 1010 and kept.min() == tied[999]
    assert len(_merge(found, TTAConfig(detections_per_image=100), 0.05)[1]) == 100


def test_tta_config_needs_one_range_per_scale() -> None:
    with pytest.raises(UserError, match="one scale range per scale"):
        TTAConfig(scales=(400, 500), scale_ranges=((0, 10000),))


# predict_tta


class FixedBoxes(nn.Module):
    """A stand-in detector: the same boxes, in network-input pixels, for every image and pass."""

    def __init__(self, boxes: list[list[float]], labels: list[int]) -> None:
        super().__init__()
        self.boxes = torch.tensor(boxes, dtype=torch.float32)
        self.labels = torch.tensor(labels)

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> list[Detections]:
        scores = torch.full((len(self.boxes),), 0.9)
        return [Detections(self.boxes.clone(), scores, self.labels.clone()) for _ in image_sizes]


def smoke_config(*overrides: str) -> cfg.Config:
    """The smoke model at test size 256, max size 416, with batches of 2 images, so padded ones."""
    sizes = ["data.test_short_side=256", "data.max_size=416"]
    return cfg.build_config(None, "smoke", ["data.num_workers=0", "eval.batch_size=2", *sizes, *overrides])


def val_split(root: Path, config: cfg.Config) -> CocoDetection:
    return CocoDetection(
        root / "annotations" / "instances_val2017.json", root / "val2017", train=False, max_size=config.data.max_size
    )


def by_image(results: list[dict]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = {}
    for r in results:
        grouped.setdefault(r["image_id"], []).append(r)
    return grouped


def stored_per_resized(dataset: CocoDetection, index: int, short_side: int, max_size: int) -> tuple[float, float]:
    """(x, y) ratios of the stored image's pixels to those of the image resized to ``short_side``."""
    height, width = dataset.image_size(index)
    new_height, new_width = resized_size(height, width, short_side, max_size)
    return width / new_width, height / new_height


@pytest.mark.parametrize("flip", [False, True])
def test_flipped_pass_boxes_land_mirrored_in_the_stored_image(synth_coco: Path, flip: bool) -> None:
    config = smoke_config()
    dataset = val_split(synth_coco, config)
    model = FixedBoxes([[0, 0, 20, 30]], [1])  # the top-left corner of the network's input

    results = predict_tta(model, dataset, config, TTAConfig(scales=(), scale_ranges=(), flip=flip), CPU, Console())

    grouped = by_image(results)
    assert sorted(grouped) == dataset.image_ids
    for index, image_id in enumerate(dataset.image_ids):
        rx, ry = stored_per_resized(dataset, index, 256, 416)
        width = dataset.image_size(index)[1]
        expected = [[0, 0, 20 * rx, 30 * ry]]  # the unflipped pass
        if flip:
            expected.append([width - 20 * rx, 0, 20 * rx, 30 * ry])  # the top-right corner, not merged
        got = sorted((r["bbox"] for r in grouped[image_id]), key=lambda bbox: bbox[0])
        torch.testing.assert_close(torch.tensor(got), torch.tensor(expected))
        assert {r["category_id"] for r in grouped[image_id]} == {dataset.category_ids[1]}


def test_scale_ranges_filter_each_extra_pass(synth_coco: Path) -> None:
    config = smoke_config()
    dataset = val_split(synth_coco, config)
    # Squares at the origin with sqrt(w * h) = 8, 40 and 100, one class each.
    model = FixedBoxes([[0, 0, 8, 8], [0, 0, 40, 40], [0, 0, 100, 100]], [0, 1, 2])
    # Pass 128 keeps side 8 only and pass 900 side 40 only; the normal pass keeps all. Squares of
    # one class from different passes have IoU <= 1/4, so none merge. Pass 128 is below 800, so it
    # keeps the test max size (416); pass 900 gets the TTA one (1000).
    tta = TTAConfig(scales=(128, 900), scale_ranges=((7, 16), (20, 41)), max_size=1000, flip=False)

    results = predict_tta(model, dataset, config, tta, CPU, Console())

    for index, detections in enumerate(by_image(results)[image_id] for image_id in dataset.image_ids):
        widths: dict[int, list[float]] = {}
        for r in detections:
            widths.setdefault(dataset.category_ids.index(r["category_id"]), []).append(r["bbox"][2])
        normal = stored_per_resized(dataset, index, 256, 416)[0]
        small = stored_per_resized(dataset, index, 128, 416)[0]
        large = stored_per_resized(dataset, index, 900, 1000)[0]
        assert sorted(widths[0]) == pytest.approx(sorted([8 * normal, 8 * small]))
        assert sorted(widths[1]) == pytest.approx(sorted([40 * normal, 40 * large]))
        assert widths[2] == pytest.approx([100 * normal])


def test_predict_tta_with_a_real_model(synth_coco: Path) -> None:
    config = smoke_config("data.test_short_side=96", "data.max_size=160")
    dataset = val_split(synth_coco, config)
    torch.manual_seed(0)
    model = OneStageDetector(config.model, dataset.num_classes)
    nn.init.zeros_(model.head.cls_logits.bias)  # cls = 0.5 at random init, so that there are detections
    tta = TTAConfig(scales=(128,), scale_ranges=((32, 10000),), max_size=200, detections_per_image=50)

    results = predict_tta(model, dataset, config, tta, CPU, Console())

    grouped = by_image(results)
    assert sorted(grouped) == dataset.image_ids
    for index, image_id in enumerate(dataset.image_ids):
        height, width = dataset.image_size(index)
        assert 0 < len(grouped[image_id]) <= 50
        for r in grouped[image_id]:
            x, y, w, h = r["bbox"]
            assert all(math.isfinite(v) for v in r["bbox"])
            assert 0 <= x and 0 <= y and 0 <= w and 0 <= h
            assert x + w <= width + 1e-3 and y + h <= height + 1e-3
            assert r["category_id"] in dataset.category_ids
            assert 0 < r["score"] <= 1


def test_coco_results_convert_to_xywh_and_coco_ids() -> None:
    results = coco_results(
        7, torch.tensor([[1.0, 2.0, 4.0, 8.0]]), torch.tensor([0.5]), torch.tensor([1]), category_ids=[3, 9]
    )
    assert results == [{"image_id": 7, "category_id": 9, "bbox": [1.0, 2.0, 3.0, 6.0], "score": 0.5}]


class RecordsPrecision(FixedBoxes):
    """FixedBoxes that records whether CPU autocast or TF32 math was on in each forward call."""

    def __init__(self) -> None:
        super().__init__([[0, 0, 20, 30]], [1])
        self.autocast_on: list[bool] = []

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> list[Detections]:
        tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
        self.autocast_on.append(torch.is_autocast_enabled("cpu") or tf32)
        return super().forward(images, image_sizes)


def test_evaluation_and_tta_run_in_fp32_under_an_amp_training_config(synth_coco: Path) -> None:
    config = smoke_config("train.amp=bf16")
    dataset = val_split(synth_coco, config)
    model = RecordsPrecision()
    tta = TTAConfig(scales=(128,), scale_ranges=((0, 10000),))
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True  # as train.amp=tf32 leaves them
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # even a caller's autocast is switched off
            predict(model, dataset, config, CPU, Console())
            predict_tta(model, dataset, config, tta, CPU, Console())
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32  # restored
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert len(model.autocast_on) == 2 + 2 * 4 and not any(model.autocast_on)
