"""Dynamic soft label assignment (DSL; RTMDet, Lyu et al., 2022), as mmdetection 3.3's
``DynamicSoftLabelAssigner``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from atssrepro.model.assigners.common import AssignInputs, Assignment, all_background, pairwise_iou, strictly_inside
from atssrepro.model.assigners.dynamic_k import dynamic_k_match

LOG_EPS = 1e-7


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


def dsl_cost(
    inputs: AssignInputs, *, iou_weight: float = 3.0, soft_center_radius: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DSL's cost of every (GT, prior) pair, the IoUs and the candidate priors.

    A prior is a candidate (valid) when its centre lies strictly inside some GT box. The cost is
    the soft classification cost (:func:`_soft_bce` of the logits against one-hot(GT class) x IoU,
    summed over classes) + iou_weight x -log(IoU + 1e-7) + 10^(d / stride - soft_center_radius),
    d the distance from the prior's centre to the GT's centre. No penalty for a candidate outside
    a given GT's box: the centre prior makes far priors costly.

    Returns:
        cost [B, G, N], IoU [B, G, N] and valid [B, N] bool (over the real GTs).
    """
    gt_boxes, gt_mask = inputs.gt_boxes.float(), inputs.gt_mask
    centres = inputs.centres
    valid = (strictly_inside(centres, gt_boxes) & gt_mask[..., None]).any(dim=1)  # [B, N]

    gt_centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0  # [B, G, 2]
    distance = centres[:, 0] - gt_centres[..., 0, None]  # [B, G, N]
    dy = centres[:, 1] - gt_centres[..., 1, None]
    distance.mul_(distance).add_(dy.mul_(dy)).sqrt_().div_(inputs.strides.float()).sub_(soft_center_radius)
    soft_center_prior = torch.pow(10, distance, out=distance)
    del dy

    ious = pairwise_iou(inputs.pred_boxes.float(), gt_boxes)
    cost = torch.add(ious, LOG_EPS).log_().neg_().mul_(iou_weight)
    # Summed over classes: the sum against all-zero soft labels, with the GT class's term swapped.
    logits = inputs.cls_logits.float()
    (all_zero,) = _soft_bce(logits, (0.0,))
    as_zero, as_iou = _soft_bce(inputs.gt_class_columns(logits), (0.0, ious))  # [B, G, N]
    cost.add_(as_iou.sub_(as_zero).add_(all_zero.sum(dim=-1)[:, None, :]))
    return cost.add_(soft_center_prior), ious, valid


def dsl(
    inputs: AssignInputs, *, topk: int = 13, iou_weight: float = 3.0, soft_center_radius: float = 3.0
) -> Assignment:
    """DSL: :func:`dsl_cost`, then dynamic-k matching over the valid priors
    (:func:`~atssrepro.model.assigners.dynamic_k.dynamic_k_match` with ``topk``).

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
    cost, ious, valid = dsl_cost(inputs, iou_weight=iou_weight, soft_center_radius=soft_center_radius)
    return Assignment(dynamic_k_match(cost, ious, valid, inputs.gt_mask, topk))
