"""The ATSS assigner on cases worked out by hand, mmdetection's public cases, and properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atssrepro.config import AssignConfig
from atssrepro.model.anchors import cell_anchors
from atssrepro.model.assign import BACKGROUND, IGNORE, assign, atss, centres_inside, iou, spatial_scale


def assign_one(anchors, gts, num_per_level=None, per_location=1, topk=9):
    """Run the batched assigner on a single image."""
    anchors = torch.tensor(anchors, dtype=torch.float32).reshape(-1, 4)
    gts = torch.tensor(gts, dtype=torch.float32).reshape(1, -1, 4)
    mask = torch.ones(gts.shape[:2], dtype=torch.bool)
    levels = num_per_level or [anchors.shape[0]]
    return atss(anchors, levels, per_location, gts, mask, topk)[0].tolist()


# mmdetection tests/test_models/test_task_modules/test_assigners/test_atss_assigner.py, with its
# 1-based gt_inds turned into 0-based indices (0 -> BACKGROUND).
MMDET_PRIORS = [[0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [32, 32, 38, 42]]
MMDET_GTS = [[0, 0, 10, 9], [0, 10, 10, 19]]


def test_mmdet_case_centre_on_gt_edge_is_not_inside():
    # GT 0 -> prior 0. Prior 2 passes GT 1's IoU threshold (0.1515 >= 0.1136) but its centre
    # (10, 10) lies on GT 1's top edge, so GT 1 gets no positive.
    assert assign_one(MMDET_PRIORS, MMDET_GTS) == [0, BACKGROUND, BACKGROUND, BACKGROUND]


def test_mmdet_case_with_ignore_box_changes_nothing():
    priors = [[0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15], [30, 32, 40, 42]]
    assert assign_one(priors, MMDET_GTS) == [0, BACKGROUND, BACKGROUND, BACKGROUND]


def test_empty_gt_gives_all_background():
    anchors = torch.tensor(MMDET_PRIORS, dtype=torch.float32)
    matched = atss(anchors, [4], 1, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))
    assert matched.tolist() == [[BACKGROUND] * 4]


def test_no_anchors_gives_empty_result():
    gts = torch.tensor([MMDET_GTS], dtype=torch.float32)
    matched = atss(torch.zeros(0, 4), [0], 1, gts, torch.ones(1, 2, dtype=torch.bool))
    assert matched.shape == (1, 0)
    matched = atss(torch.zeros(0, 4), [0], 1, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool))
    assert matched.shape == (1, 0)


def test_threshold_is_mean_plus_unbiased_std():
    # Candidate IoUs [1, 0.9048, 0.7391] (mean 0.8813). Unbiased std 0.1320 -> threshold 1.0133:
    # no positive. The biased std (0.1078, threshold 0.9891) would make anchor 0 positive.
    anchors = [[0, 0, 20, 20], [1, 0, 21, 20], [3, 0, 23, 20]]
    assert assign_one(anchors, [[0, 0, 20, 20]]) == [BACKGROUND] * 3


def test_isolated_best_anchor_is_positive():
    # Candidate IoUs [1, 0, 0]: mean 1/3, unbiased std sqrt(1/3), threshold 0.91.
    anchors = [[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]]
    assert assign_one(anchors, [[0, 0, 10, 10]]) == [0, BACKGROUND, BACKGROUND]


def test_threshold_uses_greater_or_equal():
    # Two anchors with exactly the same IoU: threshold = mean + 0 = that IoU, so both pass (>=).
    # Anchor centres (5, 10) and (15, 10) are inside the GT.
    anchors = [[0, 5, 10, 15], [10, 5, 20, 15]]
    assert assign_one(anchors, [[0, 0, 20, 20]]) == [0, 0]


def test_anchor_claimed_by_two_gts_goes_to_higher_iou():
    # Anchor 0 is positive for both GTs: IoU 1.0 with [0,0,10,10] and 0.694 with [0,0,12,12].
    anchors = [[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]]
    assert assign_one(anchors, [[0, 0, 10, 10], [0, 0, 12, 12]])[0] == 0
    assert assign_one(anchors, [[0, 0, 12, 12], [0, 0, 10, 10]])[0] == 1


def test_topk_is_per_level():
    # topk=1 on two levels: the candidates are the closest anchor of each level, anchors 0 and 2,
    # never anchor 1 (level 0's second). Both have IoU 1 with the GT, so threshold = 1 and both
    # are positive; anchor 1, also a perfect match, is not even a candidate.
    same = [0, 0, 10, 10]
    matched = assign_one([same, [1, 0, 11, 10], same], [[0, 0, 10, 10]], num_per_level=[2, 1], topk=1)
    assert matched == [0, BACKGROUND, 0]


@pytest.mark.filterwarnings("ignore:std():UserWarning")  # the single-candidate case, on purpose
def test_candidates_are_topk_times_anchors_per_location():
    # One location holds a 4:1 and a 1:4 anchor of equal IoU with the square GT (ratios 0.5 and 2
    # are rounded by the official generator, so their IoUs differ). With topk=1 and
    # A=2 both are candidates (threshold = their IoU, both pass); with A ignored there would be a
    # single candidate, whose std is undefined, and no positive at all.
    pair = (cell_anchors(8, 8.0, (0.25, 4.0), 1) + 32).tolist()
    far = (cell_anchors(8, 8.0, (0.25, 4.0), 1) + 400).tolist()
    anchors = pair + far
    gt = [[0, 0, 64, 64]]
    assert assign_one(anchors, gt, per_location=2, topk=1) == [0, 0, BACKGROUND, BACKGROUND]
    assert assign_one(anchors, gt, per_location=1, topk=1) == [BACKGROUND] * 4


def test_centres_inside_is_strict_with_eps():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    points = torch.tensor([[5.0, 5.0], [0.0, 5.0], [0.01, 5.0], [0.02, 5.0], [10.0, 10.0]])
    assert centres_inside(points, boxes).tolist() == [True, False, False, True, False]


def test_iou_thresholds_and_ignore_band():
    # IoUs with GT [0,0,10,10]: 1.0 (positive), 100/220 = 0.45 (ignored), 0.33 and 0 (background).
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 22], [0, 0, 10, 30], [50, 50, 60, 60]], dtype=torch.float32)
    gts = torch.tensor([[[0, 0, 10, 10]]], dtype=torch.float32)
    matched = iou(anchors, gts, torch.ones(1, 1, dtype=torch.bool))
    assert matched.tolist() == [[0, IGNORE, BACKGROUND, BACKGROUND]]


def test_iou_low_quality_matches_and_in_gt_box():
    # GT 1 overlaps anchor 1 with IoU 40/240 only (GT 0: 40/260); as GT 1's best anchor it is still
    # positive, for GT 1. Anchor 1's centre (16, 5) lies outside GT 1, so "In GT Box" ignores it.
    anchors = torch.tensor([[0, 0, 10, 10], [6, 0, 26, 10], [200, 200, 210, 210]], dtype=torch.float32)
    gts = torch.tensor([[[0, 0, 10, 10], [22, 0, 30, 10], [0, 0, 0, 0]]], dtype=torch.float32)
    mask = torch.tensor([[True, True, False]])
    assert iou(anchors, gts, mask).tolist() == [[0, 1, BACKGROUND]]
    assert iou(anchors, gts, mask, low_quality_matches=False).tolist() == [[0, BACKGROUND, BACKGROUND]]
    assert iou(anchors, gts, mask, in_gt_box=True).tolist() == [[0, IGNORE, BACKGROUND]]


def points(*centres):
    """Tiny anchors around the given centres: only their centres matter to FCOS's rules."""
    return torch.tensor([[x - 1, y - 1, x + 1, y + 1] for x, y in centres], dtype=torch.float32)


def test_ssc_scale_ranges_pick_the_level():
    # GT [0,0,100,100]; max(l,t,r,b) is 50 at (50,50) and 90 at (10,50). Level 0 takes [0, 64],
    # level 1 [64, inf]: (50,50) is positive on level 0 only, (10,50) on level 1 only.
    anchors = points((50, 50), (10, 50), (50, 50), (10, 50), (150, 50))
    gts = torch.tensor([[[0, 0, 100, 100]]], dtype=torch.float32)
    matched = spatial_scale(anchors, [2, 3], gts, torch.ones(1, 1, dtype=torch.bool), (0, 64, float("inf")))
    assert matched.tolist() == [[0, BACKGROUND, BACKGROUND, 0, BACKGROUND]]


def test_ssc_ambiguous_point_goes_to_smallest_gt():
    anchors = points((20, 20))
    gts = torch.tensor([[[0, 0, 100, 100], [10, 10, 30, 30]]], dtype=torch.float32)
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert spatial_scale(anchors, [1], gts, mask, (0, float("inf"))).tolist() == [[1]]
    gts = gts.flip(1)
    assert spatial_scale(anchors, [1], gts, mask, (0, float("inf"))).tolist() == [[0]]


def test_center_sampling_radius_in_strides():
    # Stride 8 (level 0), radius 1.5: candidates lie within 12 px of the GT centre (50, 50).
    anchors = points((50, 50), (61, 50), (63, 50), (30, 50))
    gts = torch.tensor([[[0, 0, 100, 100]]], dtype=torch.float32)
    mask = torch.ones(1, 1, dtype=torch.bool)
    sampled = spatial_scale(anchors, [4], gts, mask, (0, float("inf")), center_radius=1.5)
    assert sampled.tolist() == [[0, 0, BACKGROUND, BACKGROUND]]
    assert spatial_scale(anchors, [4], gts, mask, (0, float("inf"))).tolist() == [[0, 0, 0, 0]]
    # The region is clipped to the GT: for a thin GT, the square around its centre is cut.
    thin = torch.tensor([[[40, 45, 60, 55]]], dtype=torch.float32)
    assert spatial_scale(points((50, 56)), [1], thin, mask, (0, float("inf")), center_radius=1.5).tolist() == [
        [BACKGROUND]
    ]


def random_boxes(generator, count, size=200.0):
    xy = torch.rand(count, 2, generator=generator) * size
    wh = torch.rand(count, 2, generator=generator) * size / 2 + 4
    return torch.cat([xy, xy + wh], dim=1)


def grid(size=200, strides=(8, 16, 32)):
    from atssrepro.model.anchors import grid_anchors

    sizes = [(-(-size // s), -(-size // s)) for s in strides]
    anchors, levels = grid_anchors(sizes, 8.0, (1.0,), 1)
    return anchors, levels[: len(strides)]


STRATEGIES = [
    AssignConfig(strategy="atss"),
    AssignConfig(strategy="iou"),
    AssignConfig(strategy="iou", in_gt_box=True),
    AssignConfig(strategy="ssc"),
    AssignConfig(strategy="center_sampling"),
]
IN_GT_RULES = [c for c in STRATEGIES if c.strategy != "iou" or c.in_gt_box]


@pytest.mark.parametrize("config", STRATEGIES, ids=lambda c: c.strategy + ("+in_gt" if c.in_gt_box else ""))
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), num_gt=st.integers(1, 6))
def test_gt_order_does_not_matter_and_in_gt_rules_hold(config, seed, num_gt):
    generator = torch.Generator().manual_seed(seed)
    anchors, levels = grid()
    gts = random_boxes(generator, num_gt)
    mask = torch.ones(1, num_gt, dtype=torch.bool)
    matched = assign(config, anchors, levels, 1, gts[None], mask)[0]
    perm = torch.randperm(num_gt, generator=generator)
    matched_perm = assign(config, anchors, levels, 1, gts[perm][None], mask)[0]
    # Map the permuted result back to the original GT indices.
    back = torch.where(matched_perm >= 0, perm[matched_perm.clamp(min=0)], matched_perm)
    assert torch.equal(matched, back)
    assert ((matched >= BACKGROUND) | (matched == IGNORE)).all() and (matched < num_gt).all()
    if config in IN_GT_RULES:
        pos = matched >= 0
        centres = (anchors[pos, :2] + anchors[pos, 2:]) / 2
        assert centres_inside(centres, gts[matched[pos]], eps=0.0).all()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_batch_with_padding_equals_images_one_by_one(seed):
    generator = torch.Generator().manual_seed(seed)
    anchors, levels = grid()
    counts = [3, 0, 5]
    padded = torch.zeros(3, 5, 4)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    singles = []
    for i, n in enumerate(counts):
        boxes = random_boxes(generator, n)
        padded[i, :n], mask[i, :n] = boxes, True
        singles.append(atss(anchors, levels, 1, boxes[None], torch.ones(1, n, dtype=torch.bool))[0])
    batched = atss(anchors, levels, 1, padded, mask)
    for i in range(3):
        assert torch.equal(batched[i], singles[i])
