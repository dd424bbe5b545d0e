"""The prediction-aware assigners on small cases worked out by hand, one rule at a time."""

from __future__ import annotations

import math

import pytest
import torch

from atssrepro.model.assign import BACKGROUND, IGNORE
from atssrepro.model.assigners import AssignInputs, dsl, ota, paa, simota, tal
from atssrepro.model.assigners.dsl import dsl_cost
from atssrepro.model.assigners.dynamic_k import dynamic_k_match, dynamic_ks
from atssrepro.model.assigners.paa import paa_first_pass, paa_reassign


def prior(cx: float, cy: float, size: float = 64.0) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def inputs(centres, preds, logits, gts, labels, stride: float = 8.0, num_per_level=None) -> AssignInputs:
    """One image: priors of side 8 x stride at ``centres``, their predicted boxes and logits [N, C]."""
    priors = torch.tensor([prior(x, y, 8 * stride) for x, y in centres])
    n = len(priors)
    return AssignInputs.single(
        priors,
        torch.full((n,), stride),
        num_per_level or [n],
        torch.tensor(logits, dtype=torch.float32).reshape(n, -1),
        torch.tensor(preds, dtype=torch.float32).reshape(n, 4),
        torch.tensor(gts, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.long),
    )


FAR = [500.0, 500.0, 510.0, 510.0]  # a predicted box that overlaps nothing


# ---- TAL ----


def test_tal_prior_claimed_by_two_gts_goes_to_higher_iou_not_higher_metric():
    # Prior 0 (centre 50, 50) lies in both GTs. Its box [15, 15, 115, 115] has IoU 7225/12775 = 0.566
    # with GT 0 (class 0, logit 5) and 9025/10975 = 0.822 with GT 1 (class 1, logit -5): metrics 0.032
    # and 0.0021. The higher IoU wins: GT 1. Priors 1 and 2 predict nothing near: metric 0.
    case = inputs(
        [(50, 50), (150, 150), (250, 250)],
        [[15, 15, 115, 115], FAR, FAR],
        [[5.0, -5.0], [0.0, 0.0], [0.0, 0.0]],
        [[0, 0, 100, 100], [20, 20, 120, 120]],
        [0, 1],
    )
    result = tal(case)
    assert result.matched.tolist() == [[1, BACKGROUND, BACKGROUND]]
    # Its soft target: its metric over (its GT's largest + 1e-7) times its GT's largest IoU.
    assert result.quality[0, 0].item() == pytest.approx(9025 / 10975, rel=1e-4)
    assert result.quality[0, 1:].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("left", "inside"), [(50.0, False), (49.99, False), (49.98, True)])
def test_tal_prior_centre_must_be_more_than_001_inside(left, inside):
    # The prior's centre x = 50; its prediction is the GT itself.
    gt = [left, 0.0, 150.0, 100.0]
    result = tal(inputs([(50, 50)], [gt], [[0.0]], [gt], [0]))
    assert result.matched.tolist() == [[0 if inside else BACKGROUND]]


def test_tal_gt_without_candidate_gets_nothing():
    # GT 1 (60..63) holds no prior centre; GT 0 gets its prior.
    case = inputs(
        [(50, 50), (150, 50)],
        [[0, 0, 100, 100], [61, 61, 62, 62]],
        [[0.0], [3.0]],
        [[0, 0, 100, 100], [60, 60, 63, 63]],
        [0, 0],
    )
    assert tal(case).matched.tolist() == [[0, BACKGROUND]]


def test_tal_soft_targets_and_topk():
    # Both priors lie in the GT. Prior 0 predicts the GT (IoU 1, score 0.5: metric 0.5); prior 1 half
    # of it (IoU 0.5: metric 0.5 x 0.5^6). Targets: metric / (0.5 + 1e-7) x 1.
    case = inputs([(30, 50), (70, 50)], [[0, 0, 100, 100], [0, 0, 100, 50]], [[0.0], [0.0]], [[0, 0, 100, 100]], [0])
    result = tal(case)
    assert result.matched.tolist() == [[0, 0]]
    assert result.quality[0].tolist() == pytest.approx([0.5 / (0.5 + 1e-7), 0.5**7 / (0.5 + 1e-7)], rel=1e-6)
    assert tal(case, topk=1).matched.tolist() == [[0, BACKGROUND]]


# ---- dynamic k (SimOTA, DSL) ----


def test_dynamic_k_is_the_truncated_sum_of_the_top_ious():
    ious = torch.tensor([[[0.9, 0.8, 0.35, 0.1], [0.3, 0.2, 0.1, 0.0], [1.0, 1.0, 1.0, 0.9]]])
    valid = torch.tensor([[True, True, True, True]])
    assert dynamic_ks(ious, valid, topk=10).tolist() == [[2, 1, 3]]  # 2.15 -> 2; 0.6 -> 1 (at least 1); 3.9 -> 3
    assert dynamic_ks(ious, valid, topk=2).tolist() == [[1, 1, 2]]
    # Invalid priors do not count: without prior 0, GT 0 sums 1.25.
    assert dynamic_ks(ious, torch.tensor([[False, True, True, True]]), topk=10).tolist() == [[1, 1, 2]]


def test_conflict_goes_to_the_cheapest_gt_of_all_even_one_that_did_not_take_the_prior():
    # k = 1 for each GT. GTs 0 and 1 both take prior 0; GT 2 takes prior 1 (cost 0.1) but is also the
    # cheapest GT of prior 0 (0.5): prior 0 goes to GT 2, as the reference's argmin over all GTs does.
    cost = torch.tensor([[[1.0, 5.0, 9.0], [2.0, 5.0, 9.0], [0.5, 0.1, 9.0]]])
    ious = torch.full((1, 3, 3), 0.3)
    valid, mask = torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)
    assert dynamic_k_match(cost, ious, valid, mask, topk=10).tolist() == [[2, 2, BACKGROUND]]
    # A padded GT takes nothing and wins no conflict.
    assert dynamic_k_match(cost, ious, valid, torch.tensor([[True, True, False]]), 10).tolist() == [
        [0, BACKGROUND, BACKGROUND]
    ]


def test_equal_costs_go_to_the_lowest_prior_index():
    # One GT, k = 1 (IoUs sum to 0.4); priors 1 and 3 tie at the lowest cost (as penalised costs
    # 1e5 + c often do in float32): the reference's top-1 keeps the first, prior 1.
    cost = torch.tensor([[[100025.5625, 100025.5625, 100027.0, 100025.5625]]])
    cost[0, 0, 0] = 100030.0
    ious, valid = torch.full((1, 1, 4), 0.1), torch.ones(1, 4, dtype=torch.bool)
    assert dynamic_k_match(cost, ious, valid, torch.ones(1, 1, dtype=torch.bool), 10).tolist() == [
        [BACKGROUND, 0, BACKGROUND, BACKGROUND]
    ]


# ---- SimOTA ----


def test_simota_candidates_penalty_and_dynamic_k_of_one():
    # GT [0, 0, 100, 100], centre square (radius 2.5 x 8) [30, 70]^2. Prior 0 (50, 50) is in both;
    # prior 1 (20, 50) in the box only (cost + 1e5); prior 2 (50, 200) in neither: not a candidate,
    # so its IoU-1 prediction counts neither for k nor as a positive. k = int(1 + 0.5) = 1.
    preds = [[0, 0, 100, 100], [0, 0, 100, 50], [0, 0, 100, 100]]
    case = inputs([(50, 50), (20, 50), (50, 200)], preds, [[0.0]] * 3, [[0, 0, 100, 100]], [0])
    assert simota(case).matched.tolist() == [[0, BACKGROUND, BACKGROUND]]
    # A fourth prior (45, 45) in both with IoU 0.6: k = int(2.1) = 2; the penalised prior 1 stays out.
    case = inputs(
        [(50, 50), (20, 50), (50, 200), (45, 45)], [*preds, [0, 0, 100, 60]], [[0.0]] * 4, [[0, 0, 100, 100]], [0]
    )
    assert simota(case).matched.tolist() == [[0, BACKGROUND, BACKGROUND, 0]]


def test_simota_gt_without_inside_prior_still_takes_one_through_its_centre_square():
    # GT [60, 60, 63, 63] holds no prior centre; prior 0 (50, 50) lies in its centre square
    # (61.5 +- 20): it is a candidate at cost + 1e5, and k = 1 takes it.
    case = inputs([(50, 50), (150, 150)], [[55, 55, 65, 65], [55, 55, 65, 65]], [[0.0], [0.0]], [[60, 60, 63, 63]], [0])
    assert simota(case).matched.tolist() == [[0, BACKGROUND]]


def test_simota_prior_on_the_centre_square_edge_is_outside():
    # GT centre (50, 50): square [30, 70]. Prior (30, 50) is on its edge and outside the GT
    # [35, 0, 65, 100]: not a candidate. Prior (30.5, 50) is inside the square (cost + 1e5; k = 1 takes it).
    gt = [[35, 0, 65, 100]]
    assert simota(inputs([(30, 50)], [gt[0]], [[0.0]], gt, [0])).matched.tolist() == [[BACKGROUND]]
    assert simota(inputs([(30.5, 50)], [gt[0]], [[0.0]], gt, [0])).matched.tolist() == [[0]]


# ---- DSL ----


def test_dsl_cost_by_hand():
    # One class, one prior (50, 50), stride 8; GT [0, 0, 100, 100] (centre (60, 50) away: d = 10);
    # the prediction [0, 0, 100, 80] has IoU 0.8; logit 0.5.
    case = inputs([(50, 50)], [[0, 0, 100, 80]], [[0.5]], [[10, 0, 110, 100]], [0])
    iou = 7200 / 10800
    p = 1 / (1 + math.exp(-0.5))
    bce = -(iou * math.log(p) + (1 - iou) * math.log(1 - p))
    expected = bce * (iou - p) ** 2 + 3 * -math.log(iou + 1e-7) + 10 ** (10 / 8 - 3)
    cost, ious, valid = dsl_cost(case)
    assert ious.item() == pytest.approx(iou, rel=1e-6)
    assert cost.item() == pytest.approx(expected, rel=1e-5)
    assert valid.tolist() == [[True]]


def test_dsl_candidate_need_not_be_in_its_gts_box_and_conflict_goes_to_cheapest():
    # Prior 0 (50, 50) and prior 1 (20, 20) lie in GT 0 [0, 0, 100, 100] only; GT 1 [60, 60, 63, 63]
    # holds none, yet every valid prior is its candidate. Prior 0 predicts GT 1's box (IoU 1 with it,
    # 0.0009 with GT 0), prior 1 predicts GT 0's. k = 1 for both GTs. GT 0's centre prior costs
    # 10^(42.4 / 8 - 3) = 199 at prior 1, so GT 0 takes prior 0 as GT 1 does; GT 1 is cheaper there.
    case = inputs(
        [(50, 50), (20, 20)],
        [[60, 60, 63, 63], [0, 0, 100, 100]],
        [[0.0, 0.0]] * 2,
        [[0, 0, 100, 100], [60, 60, 63, 63]],
        [0, 1],
    )
    assert dsl(case).matched.tolist() == [[1, BACKGROUND]]


def test_dsl_prior_on_box_edge_or_no_inside_prior_gives_no_positive():
    assert dsl(inputs([(50, 50)], [[50, 0, 100, 100]], [[0.0]], [[50, 0, 100, 100]], [0])).matched.tolist() == [
        [BACKGROUND]
    ]
    assert dsl(inputs([(50, 50)], [[55, 55, 65, 65]], [[0.0]], [[60, 60, 63, 63]], [0])).matched.tolist() == [
        [BACKGROUND]
    ]


# ---- OTA ----


def test_ota_candidate_takes_the_gts_unit_and_the_rest_is_background():
    # GT [0, 0, 100, 100]: prior 0 (50, 50) is a candidate (in the box and the square (50 +- 20));
    # prior 1 (90, 50) is in the box but outside the square; prior 2 is outside. Supply
    # k = max(1, int(0.8)) = 1.
    preds = [[0, 0, 100, 80], [0, 0, 100, 100], FAR]
    case = inputs([(50, 50), (90, 50), (300, 300)], preds, [[0.0]] * 3, [[0, 0, 100, 100]], [0])
    assert ota(case).matched.tolist() == [[0, BACKGROUND, BACKGROUND]]


def test_ota_equal_gts_tie_goes_to_the_lower_index():
    # Two identical GTs (same box, same class): their plan rows are equal, and so their scaled values
    # at prior 0; the first GT takes it.
    case = inputs([(50, 50), (300, 300)], [[0, 0, 100, 80], FAR], [[0.0]] * 2, [[0, 0, 100, 100]] * 2, [0, 0])
    assert ota(case).matched.tolist() == [[0, BACKGROUND]]


# ---- PAA ----


def test_paa_first_pass_thresholds_and_low_quality_matches():
    priors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 22], [0, 0, 10, 200], [50, 50, 60, 60]], dtype=torch.float32)
    gts = torch.tensor([[[0, 0, 10, 10], [200, 200, 210, 210]]], dtype=torch.float32)
    mask = torch.ones(1, 2, dtype=torch.bool)
    # IoUs with GT 0: 1, 0.45, 0.05, 0 -> positive, positive (>= 0.1), negative, negative. GT 1 overlaps
    # no prior: its best IoU is 0, so it claims every prior of IoU 0 with it: all four (the later GT wins).
    assert paa_first_pass(priors, gts, mask).tolist() == [[1, 1, 1, 1]]
    assert paa_first_pass(priors, gts, torch.tensor([[True, False]])).tolist() == [[0, 0, BACKGROUND, BACKGROUND]]
    first = paa_first_pass(priors, gts, torch.tensor([[True, False]]), pos_iou=0.5, neg_iou=0.1)
    assert first.tolist() == [[0, IGNORE, BACKGROUND, BACKGROUND]]


def test_paa_reassign_keeps_the_low_component_up_to_its_most_likely_member():
    # One GT, one level, six candidates in two clusters. The mixture puts the first three in component
    # 0; the most likely of them is 0.105 (nearest its mean 0.1117): it and 0.10 before it are kept.
    scores = torch.tensor([[0.13, 5.0, 0.10, 5.2, 0.105, 5.1, 0.0]])
    first = torch.tensor([[0, 0, 0, 0, 0, 0, BACKGROUND]])
    assert paa_reassign(first, scores, [7], 1).tolist() == [
        [BACKGROUND, BACKGROUND, 0, BACKGROUND, 0, BACKGROUND, BACKGROUND]
    ]
    # A GT with a single candidate keeps nothing; an ignored prior stays ignored.
    first = torch.tensor([[0, IGNORE, BACKGROUND]])
    assert paa_reassign(first, torch.tensor([[0.1, 0.2, 0.3]]), [3], 1).tolist() == [[BACKGROUND, IGNORE, BACKGROUND]]


def test_paa_candidates_are_topk_per_level():
    # Twelve first-pass positives on level 0 (scores 1..12) and two on level 1 (0.5, 0.6). With topk 9
    # the level-0 scores 10, 11 and 12 are no candidates, so they can never be positive.
    scores = torch.cat([torch.arange(1.0, 13.0), torch.tensor([0.5, 0.6])])[None]
    first = torch.zeros(1, 14, dtype=torch.long)
    kept = paa_reassign(first, scores, [12, 2], 1, topk=9)[0]
    assert (kept[9:12] == BACKGROUND).all() and kept[12:].tolist() == [0, 0]
    assert (paa_reassign(first, scores, [12, 2], 1, topk=12)[0] >= 0).sum() >= (kept >= 0).sum()


def test_paa_end_to_end_on_one_image():
    # Three priors overlap the GT; prior 2 also has the worst prediction. PAA keeps the low-loss ones.
    preds = [[0, 0, 100, 100], [2, 2, 98, 98], [40, 40, 200, 200], FAR]
    case = inputs(
        [(50, 50), (60, 60), (80, 80), (400, 400)], preds, [[4.0], [3.0], [-4.0], [0.0]], [[0, 0, 100, 100]], [0]
    )
    matched = paa(case).matched[0].tolist()
    assert matched[2:] == [BACKGROUND, BACKGROUND] and matched[0] == 0
