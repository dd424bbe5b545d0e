"""SimOTA (YOLOX, Ge et al., 2021), as mmdetection 3.3's ``SimOTAAssigner``."""

from __future__ import annotations

import torch

from atssrepro.model.assigners.common import AssignInputs, Assignment, all_background, pairwise_iou, strictly_inside
from atssrepro.model.assigners.dynamic_k import dynamic_k_match

OUTSIDE_COST = 100000.0
"""mmdetection's ``INF``: the cost added to a (prior, GT) pair not inside both the box and its centre square."""
LOG_EPS = 1e-7


def simota_cost(
    inputs: AssignInputs, *, center_radius: float = 2.5, iou_weight: float = 3.0, cls_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA's cost of every (GT, prior) pair, the IoUs and the candidate priors.

    A prior is a candidate (valid) when its centre lies strictly inside some GT box or some GT's
    centre square (GT centre +- center_radius x stride, not clipped to the box). The cost is
    cls_weight x BCE(sigmoid(logits), one-hot of the GT class), summed over classes,
    + iou_weight x -log(IoU + 1e-7), + 1e5 unless the prior is inside both that GT's box and
    its centre square.

    Returns:
        cost [B, G, N], IoU [B, G, N] and valid [B, N] bool (over the real GTs).
    """
    gt_boxes, gt_mask = inputs.gt_boxes.float(), inputs.gt_mask
    centres, strides = inputs.centres, inputs.strides.float()
    in_box = strictly_inside(centres, gt_boxes)  # [B, G, N]
    # The centre square (GT centre +- radius x stride) of each level, its sides as the reference forms them.
    radius = center_radius * strides
    gt_centres = ((gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0).repeat(1, 1, 2)  # [B, G, 4]
    in_centre, start = [], 0
    for count in (c for c in inputs.num_per_level if c > 0):
        level_radius = radius[start]  # device arithmetic only: no host tensor reaches the device
        offset = torch.stack([-level_radius, -level_radius, level_radius, level_radius])
        in_centre.append(strictly_inside(centres[start : start + count], gt_centres + offset))
        start += count
    in_centre = torch.cat(in_centre, dim=-1)
    valid = ((in_box | in_centre) & gt_mask[..., None]).any(dim=1)  # [B, N]
    outside = ~in_box.logical_and_(in_centre)

    ious = pairwise_iou(inputs.pred_boxes.float(), gt_boxes)
    cost = torch.add(ious, LOG_EPS).log_().neg_().mul_(iou_weight)
    # BCE summed over classes = its sum against all-zero targets, with the GT class's term swapped:
    # -log(1 - p) over all classes, + log(1 - p) - log(p) of the GT class; logs floored at -100.
    probs = inputs.cls_logits.float().sigmoid()
    all_negative = probs.neg().log1p_().clamp_(min=-100).sum(dim=-1).neg_()  # [B, N]
    gt_probs = inputs.gt_class_columns(probs)  # [B, G, N]
    cls_cost = gt_probs.log().clamp_(min=-100)
    cls_cost.sub_(gt_probs.neg_().log1p_().clamp_(min=-100)).neg_().add_(all_negative[:, None, :])
    cost.add_(cls_cost.mul_(cls_weight)).add_(outside, alpha=OUTSIDE_COST)  # + exactly 1e5 or 0
    return cost, ious, valid


def simota(
    inputs: AssignInputs,
    *,
    center_radius: float = 2.5,
    candidate_topk: int = 10,
    iou_weight: float = 3.0,
    cls_weight: float = 1.0,
) -> Assignment:
    """SimOTA: :func:`simota_cost`, then dynamic-k matching over the valid priors
    (:func:`~atssrepro.model.assigners.dynamic_k.dynamic_k_match` with ``candidate_topk``).

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
    cost, ious, valid = simota_cost(inputs, center_radius=center_radius, iou_weight=iou_weight, cls_weight=cls_weight)
    return Assignment(dynamic_k_match(cost, ious, valid, inputs.gt_mask, candidate_topk))
