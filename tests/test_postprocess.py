"""The inference pipeline on head outputs whose detections are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from atssrepro.config import InferenceConfig
from atssrepro.model.box_coder import DeltaCoder
from atssrepro.model.postprocess import postprocess

# Level 0 holds anchors 0-2, level 1 anchor 3. Zero deltas decode to the anchors themselves.
ANCHORS = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 40, 40]], dtype=torch.float32)
LEVELS = [3, 1]
STRIDES = torch.tensor([8.0, 8.0, 8.0, 16.0])


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def head_outputs(batch: int = 1):
    """cls probabilities (anchor, class): (0,0)=.9 (1,0)=.8 (2,1)=.6 (2,0)=.04 (3,0)=.5, rest ~0;
    centerness .5 everywhere except anchor 1 (~1)."""
    cls = torch.full((batch, 4, 2), -20.0)
    for (anchor, cls_index), p in {(0, 0): 0.9, (1, 0): 0.8, (2, 1): 0.6, (2, 0): 0.04, (3, 0): 0.5}.items():
        cls[0, anchor, cls_index] = logit(p)
    ctr = torch.zeros(batch, 4)
    ctr[0, 1] = 20.0
    return cls, torch.zeros(batch, 4, 4), ctr


def detect(cls, deltas, ctr, sizes=((100, 100),), config=InferenceConfig()):
    return postprocess(cls, deltas, ctr, ANCHORS, STRIDES, LEVELS, torch.tensor(sizes), DeltaCoder(), config)


def run(config: InferenceConfig, sizes=((100, 100),)):
    return detect(*head_outputs(), sizes=sizes, config=config)


def test_scores_threshold_nms_and_order():
    (det,) = run(InferenceConfig())
    # (0,0) is suppressed by (1,0): same class, IoU 90/110 = 0.82 > 0.6, lower score sqrt(.9 x .5).
    # (2,0) is below the 0.05 threshold. Scores are sqrt(cls x centerness), in decreasing order.
    assert det.labels.tolist() == [0, 1, 0]
    assert det.scores.tolist() == pytest.approx([math.sqrt(0.8), math.sqrt(0.3), math.sqrt(0.25)], abs=1e-5)
    assert det.boxes.tolist() == [[1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 40, 40]]


def test_pre_nms_topk_is_per_level_and_ranked_by_cls_times_centerness():
    # Level 0 ranks (1,0)=.8 > (0,0)=.45 > (2,1)=.3; with top 2 per level, (2,1) is gone although it
    # would survive NMS, while level 1 keeps its only candidate.
    (det,) = run(InferenceConfig(pre_nms_topk=2))
    assert det.labels.tolist() == [0, 0]
    assert det.boxes.tolist() == [[1, 0, 11, 10], [0, 0, 40, 40]]


def test_nms_is_per_class():
    cls, deltas, ctr = head_outputs()
    cls[0, 0, 1] = logit(0.7)  # anchor 0 also scores class 1, overlapping (1,0) but another class
    (det,) = detect(cls, deltas, ctr)
    assert sorted(zip(det.labels.tolist(), det.boxes[:, 0].tolist())) == [(0, 0.0), (0, 1.0), (1, 0.0), (1, 50.0)]


def test_detections_per_image_keeps_the_best():
    (det,) = run(InferenceConfig(detections_per_image=1))
    assert det.scores.tolist() == pytest.approx([math.sqrt(0.8)], abs=1e-5)


def test_boxes_are_clipped_to_the_image_before_padding():
    (det,) = run(InferenceConfig(), sizes=((30, 8),))
    assert det.boxes[:, 2].max() <= 8 and det.boxes[:, 3].max() <= 30
    assert [0, 0, 8, 30] in det.boxes.tolist()


def test_images_of_a_batch_do_not_interact():
    cls, deltas, ctr = head_outputs(batch=2)  # image 1 has no candidate at all
    cls[1] = cls[0]
    cls[1, 1, 0] = -20.0  # without (1,0), image 1 keeps (0,0) which NMS removed in image 0
    dets = detect(cls, deltas, ctr, sizes=((100, 100), (100, 100)))
    assert dets[0].boxes[:, 0].tolist() == [1, 50, 0]
    assert dets[1].boxes.tolist()[0] == [0, 0, 10, 10]
    empty = detect(torch.full((1, 4, 2), -20.0), deltas[:1], ctr[:1])
    assert empty[0].boxes.shape == (0, 4)


def test_without_centerness_the_score_is_cls():
    cls, deltas, _ = head_outputs()
    (det,) = detect(cls, deltas, None)
    # Ranked by cls alone: (0,0)=.9 now beats (1,0)=.8 and suppresses it.
    assert det.scores.tolist() == pytest.approx([0.9, 0.6, 0.5], abs=1e-5)
    assert det.boxes[0].tolist() == [0, 0, 10, 10]
