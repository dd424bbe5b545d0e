"""Properties of the prediction-aware assigners on random images: batching, padding, GT order, the
rules' own invariants (TAL centres inside, dynamic k range, Sinkhorn marginals)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atssrepro.model.anchors import anchor_strides, feature_sizes, grid_anchors
from atssrepro.model.assign import BACKGROUND, IGNORE, centres_inside
from atssrepro.model.assigners import AssignInputs, dsl, ota, paa, simota, tal
from atssrepro.model.assigners.dsl import dsl_cost
from atssrepro.model.assigners.dynamic_k import dynamic_k_match, dynamic_ks
from atssrepro.model.assigners.ota import ota_candidates, ota_cost, sinkhorn
from atssrepro.model.assigners.simota import simota_cost

RULES = {"tal": tal, "simota": simota, "dsl": dsl, "ota": ota, "paa": paa}
HEIGHT, WIDTH, CLASSES = 128, 160, 5


def grid():
    priors, num_per_level = grid_anchors(feature_sizes(HEIGHT, WIDTH), 8.0, (1.0,), 1)
    return priors, anchor_strides(num_per_level), tuple(num_per_level)


def random_image(g: torch.Generator, num_gt: int, priors: torch.Tensor, strides: torch.Tensor):
    """GT boxes [G, 4], labels [G], logits [N, C] and predicted boxes [N, 4] around the priors."""
    wh = torch.exp(torch.rand(num_gt, 2, generator=g) * 3 + 1.5)
    xy = torch.rand(num_gt, 2, generator=g) * (torch.tensor([WIDTH, HEIGHT]) - wh).clamp(min=1)
    boxes = torch.cat([xy, xy + wh], dim=1)
    labels = torch.randint(0, CLASSES, (num_gt,), generator=g)
    n = len(priors)
    logits = torch.randn(n, CLASSES, generator=g) * 2 - 2
    centres = (priors[:, :2] + priors[:, 2:]) / 2 + torch.randn(n, 2, generator=g) * strides[:, None]
    size = 4 * strides[:, None] * torch.exp(torch.randn(n, 2, generator=g) * 0.5)
    return boxes, labels, logits, torch.cat([centres - size / 2, centres + size / 2], dim=1)


def padded_batch(seed: int, counts: list[int]) -> tuple[AssignInputs, list[AssignInputs]]:
    """A padded batch of images with ``counts`` GTs (garbage in the padding) and the same images one by one."""
    g = torch.Generator().manual_seed(seed)
    priors, strides, levels = grid()
    width = max(counts)
    gt_boxes = torch.rand(len(counts), width, 4, generator=g) * 100  # padding: random, not even boxes
    gt_labels = torch.randint(0, CLASSES, (len(counts), width), generator=g)
    gt_mask = torch.zeros(len(counts), width, dtype=torch.bool)
    logits, preds, singles = [], [], []
    for i, count in enumerate(counts):
        boxes, labels, image_logits, image_preds = random_image(g, count, priors, strides)
        gt_boxes[i, :count], gt_labels[i, :count], gt_mask[i, :count] = boxes, labels, True
        logits.append(image_logits)
        preds.append(image_preds)
        singles.append(AssignInputs.single(priors, strides, levels, image_logits, image_preds, boxes, labels))
    batch = AssignInputs(priors, strides, levels, torch.stack(logits), torch.stack(preds), gt_boxes, gt_labels, gt_mask)
    return batch, singles


@pytest.mark.parametrize("name", RULES)
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), counts=st.lists(st.integers(0, 6), min_size=1, max_size=3))
def test_batch_with_padding_equals_images_one_by_one(name, seed, counts):
    batch, singles = padded_batch(seed, counts)
    rule = RULES[name]
    result = rule(batch)
    for i, single in enumerate(singles):
        alone = rule(single)
        assert torch.equal(result.matched[i], alone.matched[0])
        if alone.quality is not None:
            assert torch.equal(result.quality[i], alone.quality[0])
    matched = result.matched
    real = torch.tensor(counts)[:, None]
    assert ((matched == BACKGROUND) | (matched == IGNORE) | ((matched >= 0) & (matched < real))).all()


# Not PAA: its first pass lets a later GT take the priors of its highest IoU from an earlier one, as
# mmdetection's MaxIoUAssigner does (test_assigners_rules.py), so it depends on the order of the GTs.
@pytest.mark.parametrize("name", ["tal", "simota", "dsl", "ota"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), num_gt=st.integers(2, 6))
def test_gt_order_does_not_matter(name, seed, num_gt):
    _, (single,) = padded_batch(seed, [num_gt])
    perm = torch.randperm(num_gt, generator=torch.Generator().manual_seed(seed))
    permuted = AssignInputs.single(
        single.priors,
        single.strides,
        single.num_per_level,
        single.cls_logits[0],
        single.pred_boxes[0],
        single.gt_boxes[0, perm],
        single.gt_labels[0, perm],
    )
    matched, matched_perm = RULES[name](single).matched[0], RULES[name](permuted).matched[0]
    assert torch.equal(matched, torch.where(matched_perm >= 0, perm[matched_perm.clamp(min=0)], matched_perm))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), num_gt=st.integers(1, 6))
def test_tal_positives_lie_inside_their_gt(seed, num_gt):
    _, (single,) = padded_batch(seed, [num_gt])
    result = tal(single)
    positive = result.matched[0] >= 0
    centres = single.centres[positive]
    assert centres_inside(centres, single.gt_boxes[0, result.matched[0, positive]]).all()
    assert ((result.quality[0] > 0) == positive).all() and (result.quality[0] <= 1).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), topk=st.integers(1, 15))
def test_dynamic_k_lies_in_one_to_topk(seed, topk):
    g = torch.Generator().manual_seed(seed)
    ious = torch.rand(2, 4, 50, generator=g) ** torch.rand(1, generator=g).item()
    valid = torch.rand(2, 50, generator=g) < 0.7
    k = dynamic_ks(ious, valid, topk)
    assert ((k >= 1) & (k <= topk)).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 5))
def test_sinkhorn_plan_meets_supplies_and_demands(seed, rows):
    g = torch.Generator().manual_seed(seed)
    n = 60
    cost = torch.rand(2, rows + 1, n, generator=g) * 5
    supply = torch.randint(1, 6, (2, rows + 1), generator=g).float()
    supply[:, -1] = n - supply[:, :-1].sum(dim=1)
    mask = torch.ones(2, rows + 1, dtype=torch.bool)
    # OTA's 50 iterations leave the plan within 0.2 of its marginals on costs up to 5 (the last
    # update is u's: rows tighter); more iterations converge.
    plan = sinkhorn(cost, supply, torch.ones(2, n), mask)
    torch.testing.assert_close(plan.sum(dim=2), supply, rtol=0, atol=0.01)
    torch.testing.assert_close(plan.sum(dim=1), torch.ones(2, n), rtol=0, atol=0.2)
    plan = sinkhorn(cost, supply, torch.ones(2, n), mask, iterations=1000)
    torch.testing.assert_close(plan.sum(dim=2), supply, rtol=0, atol=1e-3)
    torch.testing.assert_close(plan.sum(dim=1), torch.ones(2, n), rtol=0, atol=1e-3)


def test_inputs_check_shapes():
    priors, strides, levels = grid()
    n = len(priors)
    good = dict(
        priors=priors,
        strides=strides,
        num_per_level=levels,
        cls_logits=torch.zeros(1, n, 3),
        pred_boxes=torch.zeros(1, n, 4),
        gt_boxes=torch.zeros(1, 2, 4),
        gt_labels=torch.zeros(1, 2, dtype=torch.long),
        gt_mask=torch.ones(1, 2, dtype=torch.bool),
    )
    AssignInputs(**good)
    for key, bad in [
        ("pred_boxes", torch.zeros(1, n - 1, 4)),
        ("gt_labels", torch.zeros(1, 3)),
        ("num_per_level", (n - 1,)),
    ]:
        with pytest.raises(ValueError, match=key):
            AssignInputs(**{**good, key: bad})
    with pytest.raises(ValueError, match="cls_logits"):
        AssignInputs(**{**good, "cls_logits": torch.zeros(1, n)})


@pytest.mark.parametrize("name", RULES)
def test_no_gt_and_no_prior_give_empty_results(name):
    priors, strides, levels = grid()
    n = len(priors)
    empty = AssignInputs.single(
        priors,
        strides,
        levels,
        torch.zeros(n, 3),
        torch.zeros(n, 4),
        torch.zeros(0, 4),
        torch.zeros(0, dtype=torch.long),
    )
    assert (RULES[name](empty).matched == BACKGROUND).all()
    none = AssignInputs.single(
        torch.zeros(0, 4),
        torch.zeros(0),
        [0],
        torch.zeros(0, 3),
        torch.zeros(0, 4),
        torch.ones(1, 4),
        torch.zeros(1, dtype=torch.long),
    )
    assert RULES[name](none).matched.shape == (1, 0)


def _dense_ota(inputs: AssignInputs) -> torch.Tensor:
    """OTA over every (GT, prior) entry: ota_cost, the dense sinkhorn and the argmax, as the reference."""
    cost, background, ious, candidate = ota_cost(inputs)
    mask, n = inputs.gt_mask, len(inputs.priors)
    top = (ious * candidate.float()).topk(min(20, n), dim=-1).values
    supply = torch.where(mask, top.sum(dim=-1).int().clamp(min=1).float(), 0.0)
    supply = torch.cat([supply, (n - supply.sum(dim=1))[:, None]], dim=1)
    rows = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
    plan = sinkhorn(torch.cat([cost, background[:, None]], dim=1), supply, torch.ones_like(background), rows)
    supplier = torch.where(rows[..., None], plan / plan.amax(dim=-1, keepdim=True), -1.0).argmax(dim=1)
    return torch.where(supplier < mask.shape[1], supplier, BACKGROUND)


@pytest.mark.parametrize("seed", range(4))
def test_ota_on_its_pairs_equals_the_dense_transport(seed):
    """ota() runs the transport on the candidate pairs only (and a candidate-less GT's whole row): the
    same assignment as over every entry, here with tiny GTs (some without a candidate) and duplicates."""
    batch, _ = padded_batch(seed, [6, 0, 11])
    g = torch.Generator().manual_seed(seed)
    boxes = batch.gt_boxes.clone()
    boxes[:, :3, 2:] = boxes[:, :3, :2] + torch.rand(3, 3, 2, generator=g) * 6  # smaller than a stride
    boxes[:, 5] = boxes[:, 4]  # a duplicate GT: equal plans, the lower index wins
    batch = dataclasses.replace(batch, gt_boxes=boxes)
    assert (batch.gt_mask & ~ota_candidates(batch).any(dim=-1)).any(), "no GT without a candidate"
    assert torch.equal(ota(batch).matched, _dense_ota(batch))


@pytest.mark.parametrize("name", ["simota", "dsl"])
@pytest.mark.parametrize("seed", range(4))
def test_pairwise_dynamic_k_equals_the_dense_matching(name, seed):
    """simota() and dsl() cost the pairs they need only (pairwise_dynamic_k_match): the same assignment as
    dynamic_k_match over their dense costs, here with tiny GTs (few or no inside priors), duplicates
    (shared priors) and, in the last image, class costs above DSL's floor."""
    batch, _ = padded_batch(seed, [6, 0, 11])
    g = torch.Generator().manual_seed(seed)
    boxes = batch.gt_boxes.clone()
    boxes[:, :3, 2:] = boxes[:, :3, :2] + torch.rand(3, 3, 2, generator=g) * 6  # smaller than a stride
    boxes[:, 5] = boxes[:, 4]  # a duplicate GT
    logits = batch.cls_logits.clone()
    logits[2] = logits[2].abs() * 400  # soft classification costs in the thousands: whole rows
    batch = dataclasses.replace(batch, gt_boxes=boxes, cls_logits=logits)
    cost_fn, topk = (simota_cost, 10) if name == "simota" else (dsl_cost, 13)
    cost, ious, valid = cost_fn(batch)
    assert torch.equal(RULES[name](batch).matched, dynamic_k_match(cost, ious, valid, batch.gt_mask, topk))
