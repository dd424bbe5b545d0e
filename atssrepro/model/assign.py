"""Training-sample assignment: which anchors are positives for which ground-truth box.

An assigner returns, for every anchor of every image, the index of its ground-truth box in the
padded ``[B, G]`` target tensors, or :data:`BACKGROUND`. Assigners run on the whole batch at
once: every image of a padded batch shares the same anchors, and ground truth is padded to G
boxes with a validity mask, so there is no Python loop over images or boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_iou

from atssrepro.model.anchors import box_centres

BACKGROUND = -1
IGNORE = -2
"""Neither positive nor negative: excluded from the classification loss."""

CENTRE_EPS = 0.01
"""An anchor centre must lie more than this many pixels inside its GT (official ``> 0.01``)."""


def batched_iou(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """IoU of every anchor with every GT box of every image.

    Args:
        anchors: [N, 4] xyxy.
        gt_boxes: [B, G, 4] xyxy.

    Returns:
        [B, N, G] float.
    """
    b, g = gt_boxes.shape[:2]
    return box_iou(anchors, gt_boxes.reshape(b * g, 4)).reshape(-1, b, g).permute(1, 0, 2)


def centres_inside(points: torch.Tensor, boxes: torch.Tensor, eps: float = CENTRE_EPS) -> torch.Tensor:
    """Whether each point lies strictly inside its box: min(l, t, r, b) > eps.

    Args:
        points: [..., 2] (x, y).
        boxes: [..., 4] xyxy, broadcastable with ``points``.

    Returns:
        [...] bool.
    """
    x, y = points[..., 0], points[..., 1]
    ltrb = torch.stack([x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], dim=-1)
    return ltrb.min(dim=-1).values > eps


def atss(
    anchors: torch.Tensor,
    num_per_level: Sequence[int],
    anchors_per_location: int,
    gt_boxes: torch.Tensor,
    gt_mask: torch.Tensor,
    topk: int = 9,
) -> torch.Tensor:
    """Adaptive Training Sample Selection (ATSS, Zhang et al., CVPR 2020, Algorithm 1).

    For each GT box: on each pyramid level take the ``topk * anchors_per_location`` anchors
    whose centres are closest to the GT centre; over those candidates (all levels together),
    the IoU threshold is mean + std (unbiased, as ``torch.std``); a candidate is positive when
    its IoU >= the threshold and its centre lies inside the GT. An anchor that is positive for
    several GT boxes goes to the one with the highest IoU. There are no ignored anchors.

    Args:
        anchors: [N, 4] xyxy anchors of all levels in level order.
        num_per_level: anchors on each level; they sum to N.
        anchors_per_location: A, the anchors at each location.
        gt_boxes: [B, G, 4] xyxy, padded.
        gt_mask: [B, G] bool, True on real boxes.
        topk: k of the paper.

    Returns:
        [B, N] int64: the matched GT index in 0..G-1, or BACKGROUND.
    """
    batch, num_gt = gt_mask.shape
    matched = torch.full((batch, anchors.shape[0]), BACKGROUND, dtype=torch.long, device=anchors.device)
    if num_gt == 0 or anchors.shape[0] == 0:
        return matched

    ious = batched_iou(anchors, gt_boxes)  # [B, N, G]
    anchor_centres = box_centres(anchors)  # [N, 2]
    gt_centres = box_centres(gt_boxes)  # [B, G, 2]
    # Squared distances rank the same as distances and save a sqrt.
    sq_dist = (anchor_centres[None, :, None, :] - gt_centres[:, None, :, :]).pow(2).sum(-1)  # [B, N, G]

    candidates = []
    start = 0
    for count in num_per_level:
        k = min(topk * anchors_per_location, count)
        _, idx = sq_dist[:, start : start + count].topk(k, dim=1, largest=False)
        candidates.append(idx + start)
        start += count
    candidates = torch.cat(candidates, dim=1)  # [B, K, G] anchor indices

    candidate_ious = ious.gather(1, candidates)  # [B, K, G]
    threshold = candidate_ious.mean(dim=1) + candidate_ious.std(dim=1)  # [B, G]
    positive = candidate_ious >= threshold[:, None, :]
    positive &= centres_inside(anchor_centres[candidates], gt_boxes[:, None, :, :])
    positive &= gt_mask[:, None, :]

    # Write each positive pair's IoU into an otherwise -inf [B, N, G] table; the max over GTs
    # then resolves anchors claimed by several GTs in favour of the highest IoU.
    pair_iou = torch.full_like(ious, float("-inf"))
    pair_iou.scatter_(1, candidates, candidate_ious.masked_fill(~positive, float("-inf")))
    best_iou, best_gt = pair_iou.max(dim=2)
    return torch.where(best_iou > float("-inf"), best_gt, matched)
