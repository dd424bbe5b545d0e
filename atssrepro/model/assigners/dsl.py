"""Dynamic soft label assignment (DSL; RTMDet, Lyu et al., 2022), as mmdetection 3.3's
``DynamicSoftLabelAssigner``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atssrepro.model.assigners.common import (
    AssignInputs,
    Assignment,
    all_background,
    centre_squares,
    on_valid_priors,
    paired_iou,
    pairwise_iou,
    strictly_inside,
)
from atssrepro.model.assigners.dynamic_k import chunked_dynamic_ks, pairwise_dynamic_k_match

LOG_EPS = 1e-7
NEAR_MARGIN = 3.0
"""Pairs costed first: the prior within soft_center_radius + 3 strides of the GT centre in x and y.
Any other pair's centre prior is at least 10^3 (0.9 x 10^3 - 1 allows for rounding and the other
terms, which are non-negative up to rounding)."""


def _soft_bce(logits: torch.Tensor, soft_labels: tuple[torch.Tensor | float, ...]) -> list[torch.Tensor]:
    """BCE-with-logits against each soft label, scaled by |soft label - sigmoid(logits)|^2 (elementwise).

    The BCE is formed as torch's ``binary_cross_entropy_with_logits`` forms it, (1 - label) x -
    log sigmoid(x), which gives its values bit for bit without a full tensor of labels; the sigmoids
    are shared by the labels.
    """
    prob, log_prob = logits.sigmoid(), F.logsigmoid(logits)
    return [
        torch.mul(logits, 1 - label).sub_(log_prob).mul_(torch.sub(prob, label).abs_().pow_(2.0))
        for label in soft_labels
    ]


def cost_of(
    ious: torch.Tensor,
    gt_logits: torch.Tensor,
    all_zero: torch.Tensor,
    dx: torch.Tensor,
    dy: torch.Tensor,
    strides: torch.Tensor,
    iou_weight: float,
    soft_center_radius: float,
) -> torch.Tensor:
    """DSL's cost from its per-pair pieces, elementwise (any broadcastable shapes: the dense [B, G, N]
    or gathered pairs [E]; the same operations in the same order, the same floats).

    The soft classification cost summed over classes (``all_zero``, the sum against all-zero soft
    labels, with the GT class's term swapped: :func:`_soft_bce` of ``gt_logits`` against the IoU,
    minus against 0) + iou_weight x -log(IoU + 1e-7) + 10^(d / stride - soft_center_radius), d the
    distance (dx, dy) from the GT's centre to the prior's.
    """
    distance = dx * dx
    distance.add_(dy * dy).sqrt_().div_(strides).sub_(soft_center_radius)
    soft_center_prior = torch.pow(10, distance, out=distance)
    cost = torch.add(ious, LOG_EPS).log_().neg_().mul_(iou_weight)
    as_zero, as_iou = _soft_bce(gt_logits, (0.0, ious))
    cost.add_(as_iou.sub_(as_zero).add_(all_zero))
    return cost.add_(soft_center_prior)


def _all_zero(logits: torch.Tensor) -> torch.Tensor:
    """[V, C] logits -> [V]: :func:`_soft_bce` against all-zero soft labels, summed over classes."""
    (all_zero,) = _soft_bce(logits, (0.0,))
    return all_zero.sum(dim=-1)


def dsl_cost(
    inputs: AssignInputs, *, iou_weight: float = 3.0, soft_center_radius: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DSL's cost (:func:`cost_of`) of every (GT, prior) pair, the IoUs and the candidate priors.

    A prior is a candidate (valid) when its centre lies strictly inside some GT box. No penalty for
    a candidate outside a given GT's box: the centre prior makes far priors costly. :func:`dsl`
    computes the same floats on the pairs it needs only; this dense form is what the reference
    comparison reads.

    Returns:
        cost [B, G, N], IoU [B, G, N] and valid [B, N] bool (over the real GTs).
    """
    gt_boxes, gt_mask = inputs.gt_boxes.float(), inputs.gt_mask
    centres = inputs.centres
    valid = (strictly_inside(centres, gt_boxes) & gt_mask[..., None]).any(dim=1)  # [B, N]
    gt_centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0  # [B, G, 2]
    dx = centres[:, 0] - gt_centres[..., 0, None]  # [B, G, N]
    dy = centres[:, 1] - gt_centres[..., 1, None]
    ious = pairwise_iou(inputs.pred_boxes.float(), gt_boxes)
    logits = inputs.cls_logits.float()
    gt_logits = inputs.gt_class_columns(logits)  # [B, G, N]
    all_zero = _all_zero(logits)[:, None, :]
    cost = cost_of(ious, gt_logits, all_zero, dx, dy, inputs.strides.float(), iou_weight, soft_center_radius)
    return cost, ious, valid


def dsl(
    inputs: AssignInputs, *, topk: int = 13, iou_weight: float = 3.0, soft_center_radius: float = 3.0
) -> Assignment:
    """DSL: the cost of :func:`dsl_cost`, then dynamic-k matching over the valid priors
    (:func:`~atssrepro.model.assigners.dynamic_k.dynamic_k_match` with ``topk``), computed as
    :func:`~atssrepro.model.assigners.dynamic_k.pairwise_dynamic_k_match` does: first the costs of
    the pairs near a GT (within ``soft_center_radius`` + 3 strides of its centre in x and y; any
    farther prior costs more than 10^3), other rows and columns only where the matching needs them.

    Priors whose centre is in no GT box are negatives; there are no ignored priors. DSL reads
    logits where SimOTA reads probabilities (mmdetection: RTMDet passes raw class scores).

    Args:
        inputs: the batch (:class:`AssignInputs`).
        topk: IoUs summed for each GT's dynamic k (13).
        iou_weight: weight of the IoU cost (3).
        soft_center_radius: the centre prior's radius, in strides (3).

    Returns:
        :class:`Assignment` with ``matched`` [B, N] (GT index or BACKGROUND); no quality.
    """
    if inputs.gt_mask.shape[1] == 0 or inputs.priors.shape[0] == 0:
        return all_background(inputs)
    gt_boxes, gt_mask = inputs.gt_boxes.float(), inputs.gt_mask
    centres, strides = inputs.centres, inputs.strides.float()
    valid = strictly_inside(centres, gt_boxes).logical_and_(gt_mask[..., None]).any(dim=1)  # [B, N]
    near = centre_squares(inputs, soft_center_radius + NEAR_MARGIN)  # [B, G, N]
    floor = 0.9 * 10.0**NEAR_MARGIN - 1.0
    gt_centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0  # [B, G, 2]
    pred_boxes = inputs.pred_boxes.float()
    k = chunked_dynamic_ks(pred_boxes, gt_boxes, valid, topk)  # [B, G]
    logits = inputs.cls_logits.float()
    all_zero, labels = on_valid_priors(_all_zero, logits, valid), inputs.gt_labels

    def pair_cost(b: torch.Tensor, g: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        dx, dy = (centres[j, i] - gt_centres[b, g, i] for i in range(2))
        ious, gt_logits = paired_iou(pred_boxes[b, j], gt_boxes[b, g]), logits[b, j, labels[b, g]]
        return cost_of(ious, gt_logits, all_zero[b, j], dx, dy, strides[j], iou_weight, soft_center_radius)

    return Assignment(pairwise_dynamic_k_match(pair_cost, near, floor, k, valid, gt_mask, topk))
