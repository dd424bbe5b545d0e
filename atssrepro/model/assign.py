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

from atssrepro.config import AssignConfig
from atssrepro.model.anchors import anchor_strides, box_centres

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


def assign(
    config: AssignConfig,
    anchors: torch.Tensor,
    num_per_level: Sequence[int],
    anchors_per_location: int,
    gt_boxes: torch.Tensor,
    gt_mask: torch.Tensor,
) -> torch.Tensor:
    """Run the static assigner that ``config.strategy`` names; arguments and result as in :func:`atss`.
    A prediction-aware strategy (it reads the predictions) is refused: ``OneStageDetector.assignment`` runs it."""
    if config.strategy not in ("atss", "iou", "ssc", "center_sampling"):
        raise ValueError(f"{config.strategy!r} is not a static assignment strategy: it needs the predictions")
    if config.strategy == "atss":
        return atss(anchors, num_per_level, anchors_per_location, gt_boxes, gt_mask, config.topk)
    if config.strategy == "iou":
        return iou(
            anchors,
            gt_boxes,
            gt_mask,
            config.positive_iou,
            config.negative_iou,
            config.low_quality_matches,
            config.in_gt_box,
        )
    radius = config.center_radius if config.strategy == "center_sampling" else None
    return spatial_scale(anchors, num_per_level, gt_boxes, gt_mask, config.scale_ranges, radius)


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of corresponding boxes: [..., 4] and [..., 4] xyxy (broadcastable) -> [...]."""
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return intersection / (area_a + area_b - intersection)


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
    several GT boxes goes to the one with the highest IoU (the lowest GT index on a tie, as
    ``torch.max`` over GTs would pick). There are no ignored anchors.

    Only the centre distances are computed for every (anchor, GT) pair; IoUs are computed for
    the candidates alone, which makes this about 10x faster than a dense IoU table.

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
    num_anchors = anchors.shape[0]
    if num_gt == 0 or num_anchors == 0:
        return torch.full((batch, num_anchors), BACKGROUND, dtype=torch.long, device=anchors.device)

    # Squared distances rank like distances; [B, G, N] puts the top-k dimension last (contiguous).
    anchor_centres, gt_centres = box_centres(anchors), box_centres(gt_boxes)
    dx = anchor_centres[:, 0] - gt_centres[..., 0, None]
    dy = anchor_centres[:, 1] - gt_centres[..., 1, None]
    sq_dist = dx.mul_(dx).add_(dy.mul_(dy))  # [B, G, N]
    candidates = []
    start = 0
    for count in num_per_level:
        k = min(topk * anchors_per_location, count)
        candidates.append(sq_dist[..., start : start + count].topk(k, dim=-1, largest=False).indices + start)
        start += count
    candidates = torch.cat(candidates, dim=-1)  # [B, G, K] anchor indices

    candidate_boxes = anchors[candidates]  # [B, G, K, 4]
    boxes = gt_boxes[:, :, None, :]
    candidate_ious = paired_iou(candidate_boxes, boxes)  # [B, G, K]
    threshold = candidate_ious.mean(dim=-1) + candidate_ious.std(dim=-1)  # [B, G]
    positive = candidate_ious >= threshold[..., None]
    positive &= centres_inside(box_centres(candidate_boxes), boxes)
    positive &= gt_mask[..., None]
    return highest_iou_wins(candidates, candidate_ious, positive, num_anchors)


def highest_iou_wins(candidates: torch.Tensor, ious: torch.Tensor, positive: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n] int64: each anchor's GT among its positive pairs (candidates [B, G, K] anchor indices, ious and
    positive [B, G, K]): the highest IoU, then the lowest GT index; else BACKGROUND. No nonzero(): no host wait."""
    (batch, num_gt, _), device = candidates.shape, candidates.device
    flat_anchor = (torch.arange(batch, device=device)[:, None, None] * n + candidates).flatten()
    ious = ious.masked_fill(~positive, float("-inf")).flatten()
    best = torch.full((batch * n,), float("-inf"), device=device).scatter_reduce(0, flat_anchor, ious, "amax")
    wins = positive.flatten() & (ious == best[flat_anchor])
    gt_of_pair = torch.arange(num_gt, device=device)[None, :, None].expand_as(candidates).flatten()
    chosen = torch.full((batch * n,), num_gt, dtype=torch.long, device=device)
    chosen = chosen.scatter_reduce(0, flat_anchor, torch.where(wins, gt_of_pair, num_gt), "amin")
    return torch.where(chosen < num_gt, chosen, BACKGROUND).view(batch, n)


def iou(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_mask: torch.Tensor,
    positive_iou: float = 0.5,
    negative_iou: float = 0.4,
    low_quality_matches: bool = True,
    in_gt_box: bool = False,
) -> torch.Tensor:
    """RetinaNet's IoU assignment (maskrcnn-benchmark's ``Matcher``).

    Each anchor takes the GT of its highest IoU: positive at IoU >= ``positive_iou``, background
    below ``negative_iou``, ignored in between. With ``low_quality_matches``, an anchor whose IoU
    with some GT equals that GT's best IoU is positive too (for its own best GT), so that every
    GT with any overlap gets a positive. With ``in_gt_box``, positives whose centre is not inside
    their GT are ignored (the "In GT Box" improvement of Table 1).

    Args:
        anchors: [N, 4]. gt_boxes: [B, G, 4]. gt_mask: [B, G].

    Returns:
        [B, N] int64: GT index, BACKGROUND or IGNORE.
    """
    batch, num_gt = gt_mask.shape
    if num_gt == 0 or anchors.shape[0] == 0:
        return torch.full((batch, anchors.shape[0]), BACKGROUND, dtype=torch.long, device=anchors.device)
    ious = batched_iou(anchors, gt_boxes).masked_fill(~gt_mask[:, None, :], -1.0)  # [B, N, G]
    best_iou, best_gt = ious.max(dim=2)  # [B, N]
    matched = torch.where(best_iou >= positive_iou, best_gt, torch.full_like(best_gt, IGNORE))
    matched = torch.where(best_iou < negative_iou, torch.full_like(best_gt, BACKGROUND), matched)
    if low_quality_matches:
        gt_best = ious.max(dim=1, keepdim=True).values  # [B, 1, G]
        # A GT that overlaps no anchor at all would otherwise claim every anchor (all IoUs 0).
        is_gt_best = (ious == gt_best) & (gt_best > 0)
        matched = torch.where(is_gt_best.any(dim=2), best_gt, matched)
    if in_gt_box:
        gt_of_anchor = gt_boxes.gather(1, best_gt[..., None].expand(-1, -1, 4))  # [B, N, 4]
        outside = ~centres_inside(box_centres(anchors)[None], gt_of_anchor)
        matched = torch.where((matched >= 0) & outside, torch.full_like(matched, IGNORE), matched)
    return matched


def spatial_scale(
    anchors: torch.Tensor,
    num_per_level: Sequence[int],
    gt_boxes: torch.Tensor,
    gt_mask: torch.Tensor,
    scale_ranges: Sequence[float],
    center_radius: float | None = None,
) -> torch.Tensor:
    """FCOS's spatial and scale constraint, optionally with center sampling.

    An anchor point (the anchor's centre) is a candidate for a GT when it lies inside the GT box,
    or, with ``center_radius``, inside the GT box intersected with a square of half-side
    ``center_radius`` x stride around the GT centre (FCOS's center sampling, the "lite" ATSS of
    Table 3). A candidate is positive when max(l, t, r, b), its distances to the GT's sides,
    lies in its level's range [scale_ranges[l], scale_ranges[l + 1]]. A point positive for
    several GTs goes to the one of smallest area.

    Args:
        anchors: [N, 4]; num_per_level: anchors per level (P3 first).
        gt_boxes: [B, G, 4]. gt_mask: [B, G].
        scale_ranges: increasing bounds, of which the first L + 1 are used for L levels.

    Returns:
        [B, N] int64: GT index or BACKGROUND.
    """
    batch, num_gt = gt_mask.shape
    matched = torch.full((batch, anchors.shape[0]), BACKGROUND, dtype=torch.long, device=anchors.device)
    if num_gt == 0 or anchors.shape[0] == 0:
        return matched
    points = box_centres(anchors)[None, :, None, :]  # [1, N, 1, 2]
    boxes = gt_boxes[:, None, :, :]  # [B, 1, G, 4]
    x, y = points[..., 0], points[..., 1]
    ltrb = torch.stack([x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], dim=-1)
    if center_radius is None:
        candidate = ltrb.amin(dim=-1) > CENTRE_EPS  # [B, N, G], the test of centres_inside
    else:
        # FCOS tests the GT box intersected with the square around its centre with "> 0"; a point
        # is inside that intersection iff it is inside both.
        strides = anchor_strides(num_per_level, anchors.device)[None, :, None]  # [1, N, 1]
        off_centre = (points - box_centres(boxes)).abs().amax(dim=-1)  # [B, N, G] Chebyshev distance
        candidate = (ltrb.amin(dim=-1) > 0) & (off_centre < center_radius * strides)
    max_distance = ltrb.amax(dim=-1)  # [B, N, G]
    bounds = torch.tensor(list(scale_ranges[: len(num_per_level) + 1]), dtype=torch.float32, device=anchors.device)
    counts = torch.tensor(list(num_per_level), device=anchors.device)
    low = bounds[:-1].repeat_interleave(counts)[None, :, None]  # [1, N, 1]
    high = bounds[1:].repeat_interleave(counts)[None, :, None]
    positive = candidate & (max_distance >= low) & (max_distance <= high) & gt_mask[:, None, :]

    area = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])  # [B, G]
    area = area[:, None, :].expand_as(positive).masked_fill(~positive, float("inf"))
    smallest, gt_index = area.min(dim=2)
    return torch.where(torch.isfinite(smallest), gt_index, matched)
