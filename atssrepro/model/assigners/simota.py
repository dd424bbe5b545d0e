"""SimOTA (YOLOX, Ge et al., 2021), as mmdetection 3.3's ``SimOTAAssigner``."""

from __future__ import annotations

import torch

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

OUTSIDE_COST = 100000.0
"""mmdetection's ``INF``: the cost added to a (prior, GT) pair not inside both the box and its centre square."""
OUTSIDE_FLOOR = OUTSIDE_COST / 2
"""Below the cost of every pair that is not inside (1e5 + a non-negative cost, up to rounding)."""
LOG_EPS = 1e-7


def simota_regions(inputs: AssignInputs, center_radius: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    """SimOTA's candidate tests: (valid [B, N], inside [B, G, N]) bool.

    A prior is valid when its centre lies strictly inside some real GT box or some real GT's centre
    square (GT centre +- center_radius x stride, not clipped to the box); a (GT, prior) pair is
    inside when the prior's centre is inside both that GT's box and its centre square.
    """
    gt_mask = inputs.gt_mask
    in_box = strictly_inside(inputs.centres, inputs.gt_boxes.float())  # [B, G, N]
    in_centre = centre_squares(inputs, center_radius)
    valid = in_box.logical_or(in_centre).logical_and_(gt_mask[..., None]).any(dim=1)  # [B, N]
    return valid, in_box.logical_and_(in_centre)


def all_negative_cost(logits: torch.Tensor) -> torch.Tensor:
    """The per-prior part of SimOTA's classification cost: the BCE of the probabilities against
    all-zero targets, summed over classes (-log(1 - p), the log floored at -100): [V, C] -> [V]."""
    return logits.sigmoid().neg_().log1p_().clamp_(min=-100).sum(dim=-1).neg_()


def cost_of(
    ious: torch.Tensor,
    gt_probs: torch.Tensor,
    all_negative: torch.Tensor,
    outside: torch.Tensor,
    iou_weight: float,
    cls_weight: float,
) -> torch.Tensor:
    """SimOTA's cost from its per-pair pieces, elementwise (any broadcastable shapes: the dense
    [B, G, N] or gathered pairs [E]; the same operations in the same order, the same floats).

    cls_weight x BCE(p, one-hot of the GT class) summed over classes + iou_weight x -log(IoU + 1e-7)
    + 1e5 where ``outside``. The BCE sum is ``all_negative`` with the GT class's term swapped:
    + log(1 - p) - log(p) of the GT class's probability ``gt_probs`` (logs floored at -100).
    """
    cost = torch.add(ious, LOG_EPS).log_().neg_().mul_(iou_weight)
    cls_cost = gt_probs.log().clamp_(min=-100)
    cls_cost.sub_(gt_probs.neg().log1p_().clamp_(min=-100)).neg_().add_(all_negative)
    return cost.add_(cls_cost.mul_(cls_weight)).add_(outside, alpha=OUTSIDE_COST)  # + exactly 1e5 or 0


def simota_cost(
    inputs: AssignInputs, *, center_radius: float = 2.5, iou_weight: float = 3.0, cls_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA's cost of every (GT, prior) pair, the IoUs and the candidate priors (the valid ones of
    :func:`simota_regions`); the cost is :func:`cost_of`, outside where a pair is not inside.

    :func:`simota` computes the same floats on the pairs it needs only; this dense form is what the
    reference comparison reads.

    Returns:
        cost [B, G, N], IoU [B, G, N] and valid [B, N] bool (over the real GTs).
    """
    valid, inside = simota_regions(inputs, center_radius)
    ious = pairwise_iou(inputs.pred_boxes.float(), inputs.gt_boxes.float())
    logits = inputs.cls_logits.float()
    gt_probs = inputs.gt_class_columns(logits).sigmoid_()  # [B, G, N]
    all_negative = all_negative_cost(logits)[:, None, :]
    cost = cost_of(ious, gt_probs, all_negative, ~inside, iou_weight, cls_weight)
    return cost, ious, valid


def simota(
    inputs: AssignInputs,
    *,
    center_radius: float = 2.5,
    candidate_topk: int = 10,
    iou_weight: float = 3.0,
    cls_weight: float = 1.0,
) -> Assignment:
    """SimOTA: the cost of :func:`simota_cost`, then dynamic-k matching over the valid priors
    (:func:`~atssrepro.model.assigners.dynamic_k.dynamic_k_match` with ``candidate_topk``), computed as
    :func:`~atssrepro.model.assigners.dynamic_k.pairwise_dynamic_k_match` does: the costs of the inside
    pairs first (a GT's k lowest are there unless it has fewer than k inside pairs), other rows and
    columns only where the matching needs them.

    Priors that are not valid are negatives; there are no ignored priors. mmdetection feeds SimOTA
    probabilities (YOLOX's are the square root of class x objectness); here they are the
    sigmoid of ``cls_logits``.

    Args:
        inputs: the batch (:class:`AssignInputs`).
        center_radius: half-side of the centre square, in strides (2.5).
        candidate_topk: IoUs summed for each GT's dynamic k (10).
        iou_weight, cls_weight: weights of the IoU and classification costs (3 and 1).

    Returns:
        :class:`Assignment` with ``matched`` [B, N] (GT index or BACKGROUND); no quality.
    """
    if inputs.gt_mask.shape[1] == 0 or inputs.priors.shape[0] == 0:
        return all_background(inputs)
    valid, inside = simota_regions(inputs, center_radius)
    pred_boxes, gt_boxes = inputs.pred_boxes.float(), inputs.gt_boxes.float()
    k = chunked_dynamic_ks(pred_boxes, gt_boxes, valid, candidate_topk)  # [B, G]
    logits, labels = inputs.cls_logits.float(), inputs.gt_labels
    all_negative = on_valid_priors(all_negative_cost, logits, valid)  # [B, N]

    def pair_cost(b: torch.Tensor, g: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        pair_ious, outside = paired_iou(pred_boxes[b, j], gt_boxes[b, g]), ~inside[b, g, j]
        gt_probs = logits[b, j, labels[b, g]].sigmoid_()
        return cost_of(pair_ious, gt_probs, all_negative[b, j], outside, iou_weight, cls_weight)

    return Assignment(
        pairwise_dynamic_k_match(pair_cost, inside, OUTSIDE_FLOOR, k, valid, inputs.gt_mask, candidate_topk)
    )
