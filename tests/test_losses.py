"""Losses, box coding and anchors."""

from __future__ import annotations

import math

import pytest
import torch

from atssrepro.config import LossConfig
from atssrepro.model.anchors import anchor_strides, cell_anchors, grid_anchors
from atssrepro.model.assign import BACKGROUND, IGNORE, atss
from atssrepro.model.box_coder import DeltaCoder, PointCoder
from atssrepro.model.losses import centerness_target, combine_losses, loss_terms, ltrb_iou_loss


def test_centerness_target_by_hand():
    points = torch.tensor([[5.0, 5.0], [5.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [0.0, 0.0, 10.0, 20.0]])
    # l = r = 5; t = 5, b = 15 -> sqrt(1 * 5 / 15); the box centre has centerness 1.
    assert centerness_target(points, boxes).tolist() == pytest.approx([math.sqrt(1 / 3), 1.0])


def test_box_coder_round_trip_and_clamp():
    anchors = torch.tensor([[0.0, 0.0, 64.0, 64.0], [100.0, 50.0, 132.0, 60.0]])
    boxes = torch.tensor([[4.0, -3.0, 70.0, 50.0], [90.0, 40.0, 200.0, 90.0]])
    strides = torch.tensor([8.0, 16.0])
    deltas = DeltaCoder().encode(anchors, strides, boxes)
    assert torch.allclose(DeltaCoder().decode(anchors, strides, deltas), boxes, atol=1e-4)
    assert deltas[0, :2].tolist() == pytest.approx([10 * 5 / 64, 10 * -8.5 / 64])  # weights 10, 10
    huge = DeltaCoder().decode(anchors[:1], strides[:1], torch.tensor([[0.0, 0.0, 100.0, 100.0]]))
    assert (huge[0, 2] - huge[0, 0]).item() == pytest.approx(64 * 1000 / 16, rel=1e-4)


def test_point_coder_distances_in_strides():
    anchors = torch.tensor([[-28.0, -28.0, 36.0, 36.0]])  # centre (4, 4), stride 8
    box = torch.tensor([[0.0, 2.0, 20.0, 12.0]])
    ltrb = PointCoder().encode(anchors, torch.tensor([8.0]), box)
    assert ltrb.tolist() == [[0.5, 0.25, 2.0, 1.0]]
    assert PointCoder().decode(anchors, torch.tensor([8.0]), ltrb).tolist() == box.tolist()


def test_anchors_official_centres_and_sizes():
    anchors, levels = grid_anchors([(2, 2), (1, 1)], 8.0, (1.0,), 1)
    assert levels == [4, 1]
    # Stride 8: centres at 4 and 12; side 8S = 64. Stride 16: centre 8, side 128.
    assert anchors[:4].tolist() == [[-28, -28, 36, 36], [-20, -28, 44, 36], [-28, -20, 36, 44], [-20, -20, 44, 44]]
    assert anchors[4].tolist() == [-56, -56, 72, 72]
    tall = cell_anchors(16, 8.0, (4.0,), 1)[0]  # ratio = h / w at area (8S)^2
    assert (tall[3] - tall[1]).item() == pytest.approx(256) and (tall[2] - tall[0]).item() == pytest.approx(64)
    assert cell_anchors(8, 4.0, (0.5, 1.0, 2.0), 3).shape == (9, 4)


def setup(batch_gts):
    anchors, levels = grid_anchors([(16, 16), (8, 8), (4, 4)], 8.0, (1.0,), 1)
    strides = anchor_strides(levels)
    g = max(len(b) for b in batch_gts)
    boxes = torch.zeros(len(batch_gts), g, 4)
    labels = torch.full((len(batch_gts), g), -1)
    mask = torch.zeros(len(batch_gts), g, dtype=torch.bool)
    for i, gts in enumerate(batch_gts):
        for j, box in enumerate(gts):
            boxes[i, j], labels[i, j], mask[i, j] = torch.tensor(box, dtype=torch.float32), j % 3, True
    matched = atss(anchors, levels, 1, boxes, mask)
    return anchors, strides, matched, boxes, labels


def losses_of(cls, reg, ctr, anchors, strides, matched, boxes, labels, config=LossConfig(), coder=DeltaCoder()):
    return one_group_losses(cls, reg, ctr, anchors, strides, matched, boxes, labels, coder, config=config)


def one_group_losses(*inputs, config):
    """The normalised losses of a batch that is one padding group: loss_terms, then combine_losses."""
    return combine_losses([loss_terms(*inputs, config)], config)


def head(batch, n, requires_grad=True):
    generator = torch.Generator().manual_seed(0)
    cls = torch.randn(1, n, 3, generator=generator).repeat(batch, 1, 1) - 3
    reg = 0.1 * torch.randn(1, n, 4, generator=generator).repeat(batch, 1, 1)
    ctr = torch.randn(1, n, generator=generator).repeat(batch, 1)
    return [t.requires_grad_(requires_grad) for t in (cls, reg, ctr)]


def test_empty_gt_gives_classification_loss_only_and_a_graph():
    anchors, strides, matched, boxes, labels = setup([[]])
    cls, reg, ctr = head(1, anchors.shape[0])
    losses = losses_of(cls, reg, ctr, anchors, strides, matched, boxes, labels)
    assert losses["cls"] > 0 and losses["reg"] == 0 and losses["centerness"] == 0
    sum(losses.values()).backward()
    assert reg.grad is not None and torch.all(reg.grad == 0)


def test_losses_are_normalised_per_positive_not_per_image():
    gts = [[10, 20, 90, 70], [40, 40, 120, 120]]
    anchors, strides, matched, boxes, labels = setup([gts])
    one = losses_of(*head(1, anchors.shape[0]), anchors, strides, matched, boxes, labels)
    anchors, strides, matched, boxes, labels = setup([gts, gts])
    two = losses_of(*head(2, anchors.shape[0]), anchors, strides, matched, boxes, labels)
    assert all(one[k] > 0 for k in one)
    for k in one:  # two copies of the image: twice the sums, twice the normalisers
        assert two[k].item() == pytest.approx(one[k].item(), rel=1e-5)


def test_ignored_anchors_do_not_count_in_classification():
    anchors, strides, matched, boxes, labels = setup([[[10, 20, 90, 70]]])
    cls, reg, ctr = head(1, anchors.shape[0], requires_grad=False)
    background = (matched[0] == BACKGROUND).nonzero()[:5, 0]
    cls[0, background] = 5.0  # confident false positives
    base = losses_of(cls, reg, ctr, anchors, strides, matched, boxes, labels)["cls"]
    matched[0, background] = IGNORE
    ignored = losses_of(cls, reg, ctr, anchors, strides, matched, boxes, labels)["cls"]
    assert ignored < base


def test_smooth_l1_and_no_centerness_variants():
    anchors, strides, matched, boxes, labels = setup([[[10, 20, 90, 70]]])
    cls, reg, ctr = head(1, anchors.shape[0], requires_grad=False)
    smooth = losses_of(cls, reg, None, anchors, strides, matched, boxes, labels, LossConfig(regression="smooth_l1"))
    assert set(smooth) == {"cls", "reg"} and smooth["reg"] > 0
    # smooth-L1 is RetinaNet's per-coordinate mean over positives, on the encoded targets.
    positive = matched[0] >= 0
    targets = DeltaCoder().encode(anchors[positive], strides[positive], boxes[0, matched[0][positive]])
    expected = torch.nn.functional.smooth_l1_loss(reg[0, positive], targets, beta=0.11)
    assert smooth["reg"].item() == pytest.approx(2.0 * expected.item(), rel=1e-5)  # reg_weight 2.0
    giou = losses_of(cls, reg, None, anchors, strides, matched, boxes, labels)
    assert "centerness" not in giou and giou["reg"] > 0


def selected_positives_losses(cls, reg, ctr, anchors, strides, matched, boxes, labels, coder, config):
    """The losses computed on the positives alone, as gathered by boolean indexing: the oracle
    for :func:`loss_terms` + :func:`combine_losses`, which weight every anchor instead (no host sync)."""
    positive = matched >= 0
    targets = torch.zeros_like(cls)
    targets[positive, labels.gather(1, matched.clamp(min=0))[positive]] = 1.0
    from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

    cls_loss = sigmoid_focal_loss(cls, targets, config.focal_alpha, config.focal_gamma, reduction="none")
    cls_loss = cls_loss * (matched != IGNORE).unsqueeze(-1)
    b, a = positive.nonzero(as_tuple=True)
    gt = boxes[b, matched[b, a]]
    ctr_targets = centerness_target((anchors[a, :2] + anchors[a, 2:]) / 2, gt)
    weights = ctr_targets if ctr is not None else torch.ones_like(ctr_targets)
    num_pos = positive.sum().clamp(min=1)
    if config.regression == "giou":
        giou = generalized_box_iou_loss(coder.decode(anchors[a], strides[a], reg[b, a]), gt, reduction="none", eps=1e-7)
        reg_loss = (giou * weights).sum() / (weights.sum() if weights.sum() > 0 else 1.0)
    elif config.regression == "smooth_l1":
        encoded = coder.encode(anchors[a], strides[a], gt)
        reg_loss = torch.nn.functional.smooth_l1_loss(reg[b, a], encoded, beta=config.smooth_l1_beta, reduction="sum")
        reg_loss = reg_loss / (4 * num_pos)
    else:
        kind = "iou" if config.regression == "ltrb_iou" else "giou"
        reg_loss = (ltrb_iou_loss(reg[b, a], coder.encode(anchors[a], strides[a], gt), kind) * weights).sum()
        reg_loss = reg_loss / (weights.sum() if weights.sum() > 0 else 1.0)
    losses = {"cls": cls_loss.sum() / num_pos, "reg": config.reg_weight * reg_loss}
    if ctr is not None:
        bce = torch.nn.functional.binary_cross_entropy_with_logits(ctr[b, a], ctr_targets, reduction="sum")
        losses["centerness"] = bce / num_pos
    return losses


@pytest.mark.parametrize(
    "regression, coder, centerness",
    [("giou", DeltaCoder(), True), ("giou", PointCoder(), True), ("giou", DeltaCoder(), False),
     ("smooth_l1", DeltaCoder(), False), ("ltrb_iou", PointCoder(), True), ("ltrb_giou", PointCoder(), False)],
)  # fmt: skip
def test_losses_over_all_anchors_equal_the_losses_of_the_selected_positives(regression, coder, centerness):
    gts = [[[10, 20, 90, 70], [40, 40, 120, 120], [0, 0, 30, 30]], [], [[60, 10, 100, 50]]]
    anchors, strides, matched, boxes, labels = setup(gts)
    generator = torch.Generator().manual_seed(1)
    matched[0, torch.randperm(matched.shape[1], generator=generator)[:40]] = IGNORE
    n = anchors.shape[0]
    cls = (torch.randn(3, n, 3, generator=generator) - 2).requires_grad_()
    reg = torch.randn(3, n, 4, generator=generator).abs().mul(0.5).requires_grad_()
    ctr = torch.randn(3, n, generator=generator).requires_grad_() if centerness else None
    config = LossConfig(regression=regression)
    inputs = [t for t in (cls, reg, ctr) if t is not None]

    ours = one_group_losses(cls, reg, ctr, anchors, strides, matched, boxes, labels, coder, config=config)
    oracle = selected_positives_losses(cls, reg, ctr, anchors, strides, matched, boxes, labels, coder, config)
    assert set(ours) == set(oracle)
    for key in ours:
        assert ours[key].item() == pytest.approx(oracle[key].item(), rel=1e-5)
    our_grads = torch.autograd.grad(sum(ours.values()), inputs)
    oracle_grads = torch.autograd.grad(sum(oracle.values()), inputs)
    for mine, theirs in zip(our_grads, oracle_grads):
        assert torch.isfinite(mine).all()
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7)
