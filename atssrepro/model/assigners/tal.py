"""Task-aligned assignment (TAL; TOOD, Feng et al., ICCV 2021), as mmdetection 3.3's ``TaskAlignedAssigner``."""

from __future__ import annotations

import torch

from atssrepro.model.assign import CENTRE_EPS, centres_inside, highest_iou_wins
from atssrepro.model.assigners.common import AssignInputs, Assignment, all_background, pairwise_iou

QUALITY_EPS = 1e-7
"""TOOD's ``10e-8`` under the largest alignment metric of a GT when normalising it."""


def alignment_metric(inputs: AssignInputs, alpha: float = 1.0, beta: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """t = s^alpha * u^beta for every (GT, prior): s the predicted probability of the GT's class,
    u the IoU of the prior's predicted box with the GT.

    Returns:
        metric [B, G, N] and IoU [B, G, N], float.
    """
    ious = pairwise_iou(inputs.pred_boxes.float(), inputs.gt_boxes.float())
    scores = inputs.gt_class_columns(inputs.cls_logits.float()).sigmoid_()
    return ious.pow(beta).mul_(scores.pow_(alpha)), ious


def tal(inputs: AssignInputs, *, topk: int = 13, alpha: float = 1.0, beta: float = 6.0) -> Assignment:
    """Task-aligned assignment.

    Each GT takes the ``topk`` priors of largest alignment metric (:func:`alignment_metric`), all
    levels together (``torch.topk``'s choice among equal metrics); of those, the ones with
    metric > 0 whose centre lies inside the GT (every side distance > 0.01) are positive. A prior
    positive for several GTs goes to the one of highest IoU (the lowest GT index on a tie). There
    are no ignored priors.

    ``quality`` is TOOD's soft classification target: each positive's metric divided by (its GT's
    largest positive metric + 1e-7) times its GT's largest positive IoU; 0 on negatives.

    Args:
        inputs: the batch (:class:`AssignInputs`); cls_logits are read through a sigmoid.
        topk: candidates per GT (13, mmdetection's TOOD config).
        alpha, beta: exponents of the score and the IoU (1 and 6).

    Returns:
        :class:`Assignment` with ``matched`` [B, N] (GT index or BACKGROUND) and ``quality`` [B, N].
    """
    gt_mask = inputs.gt_mask
    batch, num_gt = gt_mask.shape
    num_priors = inputs.priors.shape[0]
    if num_gt == 0 or num_priors == 0:
        result = all_background(inputs)
        return Assignment(result.matched, torch.zeros(result.matched.shape, device=result.matched.device))

    metric, ious = alignment_metric(inputs, alpha, beta)  # [B, G, N]
    candidates = metric.topk(min(topk, num_priors), dim=-1).indices  # [B, G, k]
    candidate_iou = ious.gather(-1, candidates)
    is_positive = metric.gather(-1, candidates) > 0
    is_positive &= centres_inside(inputs.centres[candidates], inputs.gt_boxes.float()[:, :, None], CENTRE_EPS)
    is_positive &= gt_mask[..., None]

    # A prior positive for several GTs: the highest IoU wins, then the lowest GT index (the reference's max over GTs).
    matched = highest_iou_wins(candidates, candidate_iou, is_positive, num_priors)
    is_matched = matched >= 0

    # Soft targets, normalised per GT over its positives: group image * G + GT; negatives in a dump group.
    best_gt = matched.clamp(min=0)[:, None]
    own_metric, own_iou = metric.gather(1, best_gt).squeeze(1), ious.gather(1, best_gt).squeeze(1)  # [B, N]
    image = torch.arange(batch, device=metric.device)[:, None]
    group = torch.where(is_matched, image * num_gt + best_gt[:, 0], batch * num_gt)
    largest = torch.zeros(batch * num_gt + 1, 2, device=metric.device)
    values = torch.stack([own_metric, torch.where(is_matched, own_iou, 0.0)], dim=-1).flatten(0, 1)
    largest = largest.scatter_reduce(0, group.flatten()[:, None].expand(-1, 2), values, "amax", include_self=False)
    per_prior = largest[group]  # [B, N, 2]
    quality = own_metric / (per_prior[..., 0] + QUALITY_EPS) * per_prior[..., 1]
    return Assignment(matched, torch.where(is_matched, quality, 0.0))
