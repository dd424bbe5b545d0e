"""Probabilistic anchor assignment (PAA; Kim and Lee, ECCV 2020), as mmdetection 3.3's ``PAAHead``
(``paa_reassign``, ``gmm_separation_scheme``, ``get_pos_loss``) with its ``MaxIoUAssigner`` first pass."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from atssrepro.model.assign import BACKGROUND, IGNORE
from atssrepro.model.assigners.common import (
    IOU_EPS,
    AssignInputs,
    Assignment,
    all_background,
    gt_chunks,
    pairwise_iou,
)
from atssrepro.model.assigners.gmm import fit_two_gaussians, predict_and_score

GIOU_WEIGHT = 1.3
"""The GIoU weight of PAA's anchor score (mmdetection's PAA config ``loss_bbox`` weight; docs/semantics.md)."""


def paa_first_pass(
    priors: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor, *, pos_iou: float = 0.1, neg_iou: float = 0.1
) -> torch.Tensor:
    """PAA's candidates: mmdetection's ``MaxIoUAssigner(pos_iou, neg_iou, min_pos_iou=0)`` on the priors.

    Each prior takes the GT of its highest IoU (the lowest index on a tie): positive at IoU >=
    ``pos_iou``, negative below ``neg_iou``, ignored in between. Then each GT, in index order,
    takes every prior whose IoU with it equals its highest IoU (a later GT overrides an earlier
    one), also when that IoU is 0, as the reference does with ``min_pos_iou = 0``.

    Args:
        priors: [N, 4] xyxy anchors. gt_boxes: [B, G, 4] xyxy. gt_mask: [B, G] bool.

    Returns:
        [B, N] int64: GT index, BACKGROUND or IGNORE.
    """
    batch, num_gt = gt_mask.shape
    if num_gt == 0 or priors.shape[0] == 0:
        return torch.full((batch, priors.shape[0]), BACKGROUND, dtype=torch.long, device=priors.device)
    # A chunk of GTs at a time (gt_chunks), combined as over all: a later chunk's best replaces the
    # best so far only when larger (the first maximum), its claims override when of a higher index.
    best_iou = torch.full((batch, priors.shape[0]), float("-inf"), device=priors.device)
    best_gt = torch.zeros(batch, priors.shape[0], dtype=torch.long, device=priors.device)
    last_claim = torch.full_like(best_gt, -1)
    for chunk in gt_chunks(batch, num_gt, priors.shape[0]):
        mask = gt_mask[:, chunk, None]
        ious = pairwise_iou(priors.float(), gt_boxes[:, chunk].float()).masked_fill(~mask, -1.0)  # [B, g, N]
        chunk_best, chunk_gt = ious.max(dim=1)  # [B, N]
        larger = chunk_best > best_iou
        best_iou, best_gt = (
            torch.where(larger, chunk_best, best_iou),
            torch.where(larger, chunk_gt + chunk.start, best_gt),
        )
        gt_best = ious.max(dim=2, keepdim=True).values  # [B, g, 1]
        index = torch.arange(chunk.start, chunk.start + ious.shape[1], device=priors.device)[None, :, None]
        claim = torch.where((ious == gt_best) & mask, index, -1).amax(dim=1)  # [B, N]
        last_claim = torch.maximum(last_claim, claim)
    matched = torch.where(best_iou >= pos_iou, best_gt, IGNORE)
    matched = torch.where(best_iou < neg_iou, BACKGROUND, matched)
    return torch.where(last_claim >= 0, last_claim, matched)


def paa_anchor_scores(
    cls_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    first_pass: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    giou_weight: float = GIOU_WEIGHT,
) -> torch.Tensor:
    """PAA's per-prior loss against its first-pass GT (``get_pos_loss``): the focal loss of its logits
    against the GT's one-hot class, summed over classes, + giou_weight x (1 - GIoU) of its
    predicted box with the GT box, both as mmdetection computes them (GIoU's union and enclosing
    area floored at 1e-6), unnormalised and unweighted.

    Args:
        cls_logits: [B, N, C]. pred_boxes: [B, N, 4] decoded xyxy.
        first_pass: [B, N] from :func:`paa_first_pass`.
        gt_boxes: [B, G, 4]. gt_labels: [B, G] int64.

    Returns:
        [B, N] float: the loss where ``first_pass`` >= 0, 0 elsewhere.
    """
    score = torch.zeros(first_pass.shape, device=cls_logits.device)
    if gt_boxes.shape[1] == 0:
        return score
    # Computed on the first pass's positives only: [P] rows of (image, prior), each with its GT.
    b, j = (first_pass >= 0).nonzero(as_tuple=True)
    gt_index = first_pass[b, j]
    logits = cls_logits.float()[b, j]  # [P, C]
    target = F.one_hot(gt_labels[b, gt_index], logits.shape[-1]).to(logits.dtype)
    # mmdetection's py_sigmoid_focal_loss, operation for operation.
    prob = logits.sigmoid()
    pt = (1 - prob) * target + prob * (1 - target)
    focal_weight = (focal_alpha * target + (1 - focal_alpha) * (1 - target)) * pt.pow(focal_gamma)
    focal = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal_weight

    pred = pred_boxes.float()[b, j]  # [P, 4]
    gt = gt_boxes.float()[b, gt_index]
    area_pred = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_gt = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
    overlap = (torch.minimum(pred[..., 2:], gt[..., 2:]) - torch.maximum(pred[..., :2], gt[..., :2])).clamp(min=0)
    overlap = overlap[..., 0] * overlap[..., 1]
    union = (area_pred + area_gt - overlap).clamp(min=IOU_EPS)
    enclosing = (torch.maximum(pred[..., 2:], gt[..., 2:]) - torch.minimum(pred[..., :2], gt[..., :2])).clamp(min=0)
    enclosing = (enclosing[..., 0] * enclosing[..., 1]).clamp(min=IOU_EPS)
    giou = overlap / union - (enclosing - union) / enclosing
    score[b, j] = giou_weight * (1 - giou) + focal.sum(dim=-1)
    return score


def _group_ranks(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row by (key, value, position) and rank each entry within its key.

    Args:
        keys: [B, N] int64. values: [B, N] float.

    Returns:
        order [B, N] (positions, sorted) and rank [B, N] of each sorted entry within its key group.
    """
    by_value = values.argsort(dim=1, stable=True)
    order = by_value.gather(1, keys.gather(1, by_value).argsort(dim=1, stable=True))
    sorted_keys = keys.gather(1, order)
    position = torch.arange(keys.shape[1], device=keys.device).expand_as(keys)
    starts = torch.ones_like(sorted_keys, dtype=torch.bool)
    starts[:, 1:] = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    group_start = torch.where(starts, position, 0).cummax(dim=1).values
    return order, position - group_start


def paa_reassign(
    first_pass: torch.Tensor, scores: torch.Tensor, num_per_level: Sequence[int], num_gt: int, *, topk: int = 9
) -> torch.Tensor:
    """PAA's second pass (``paa_reassign`` with ``gmm_separation_scheme``), for every GT at once.

    For each GT, its first-pass positives with the ``topk`` lowest scores on each level (the
    lowest position on a tie) are its candidates, sorted by score. A GT with fewer than 2
    candidates keeps no positive. Otherwise a two-component Gaussian mixture
    (:mod:`~atssrepro.model.assigners.gmm`) is fitted to their scores; among the candidates that
    it puts in component 0 (the one started at the lowest score), the one of highest
    log-likelihood and those before it in score order are positives. Every other first-pass
    positive becomes negative; the ignored priors stay ignored.

    From mmdetection's ``paa_reassign(pos_losses, label, label_weight, bbox_weight, pos_inds,
    pos_gt_inds, anchors)`` of one image: ``first_pass[0, pos_inds] = pos_gt_inds``, IGNORE where
    ``label_weight`` is 0, BACKGROUND elsewhere; ``scores[0, pos_inds] = pos_losses``;
    ``num_per_level`` the sizes of ``anchors``. Its positives after reassignment are the priors where
    the result is >= 0.

    Args:
        first_pass: [B, N] int64 from :func:`paa_first_pass` (GT index, BACKGROUND or IGNORE).
        scores: [B, N] float: each prior's anchor score (:func:`paa_anchor_scores`), read where
            ``first_pass`` >= 0.
        num_per_level: priors per level, summing to N.
        num_gt: G, the GT count of the padded batch (first_pass < G).
        topk: candidates per GT and level (9).

    Returns:
        [B, N] int64: GT index, BACKGROUND or IGNORE.
    """
    batch, num_priors = first_pass.shape
    device = first_pass.device
    num_levels = len(num_per_level)
    positive = first_pass >= 0
    if num_gt == 0 or num_priors == 0:
        return first_pass.clone()
    scores = scores.float().masked_fill(~positive, float("inf"))
    index, level = torch.arange(num_priors, device=device), torch.zeros(num_priors, dtype=torch.long, device=device)
    for boundary in itertools.accumulate(num_per_level[:-1]):
        level += index >= boundary  # [N] level of each prior, without a host tensor on the device
    no_group = num_gt * num_levels
    order, rank = _group_ranks(torch.where(positive, first_pass * num_levels + level, no_group), scores)
    kept = (rank < topk) & positive.gather(1, order)
    candidate = torch.zeros_like(positive).scatter_(1, order, kept)  # [B, N]

    # Each GT's candidates sorted by score, in row image * (G + 1) + GT of a [B * (G + 1), L * topk]
    # table; the other priors all land in row G of their image, which stays empty (count 0).
    width = num_levels * topk
    order, rank = _group_ranks(torch.where(candidate, first_pass, num_gt), scores.masked_fill(~candidate, float("inf")))
    is_candidate = candidate.gather(1, order)
    row = torch.arange(batch, device=device)[:, None] * (num_gt + 1) + torch.where(
        is_candidate, first_pass.gather(1, order), num_gt
    )
    slot = (row * width + rank.clamp(max=width - 1)).flatten()
    num_rows = batch * (num_gt + 1)
    table_scores = torch.zeros(num_rows * width, device=device).scatter_(0, slot, scores.gather(1, order).flatten())
    table_prior = torch.zeros(num_rows * width, dtype=torch.long, device=device).scatter_(0, slot, order.flatten())
    table_scores, table_prior = table_scores.view(num_rows, width), table_prior.view(num_rows, width)
    count = torch.zeros(num_rows, dtype=torch.long, device=device).scatter_add_(
        0, row.flatten(), is_candidate.long().flatten()
    )
    valid = torch.arange(width, device=device) < count[:, None]

    mixture, _ = fit_two_gaussians(table_scores, valid)
    component, log_likelihood = predict_and_score(mixture, table_scores)
    low = valid & (component == 0) & (count[:, None] >= 2)
    best = log_likelihood.masked_fill(~low, float("-inf")).argmax(dim=1)  # first index on ties
    keep = low & (torch.arange(width, device=device) <= best[:, None])

    image = torch.arange(num_rows, device=device) // (num_gt + 1)
    flat_prior = torch.where(keep, image[:, None] * num_priors + table_prior, batch * num_priors).flatten()
    kept = torch.zeros(batch * num_priors + 1, dtype=torch.bool, device=device).scatter_(0, flat_prior, True)
    kept = kept[:-1].view(batch, num_priors) & positive
    return torch.where(first_pass == IGNORE, IGNORE, torch.where(kept, first_pass, BACKGROUND))


def paa(
    inputs: AssignInputs,
    *,
    pos_iou: float = 0.1,
    neg_iou: float = 0.1,
    topk: int = 9,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    giou_weight: float = GIOU_WEIGHT,
) -> Assignment:
    """Probabilistic anchor assignment: :func:`paa_first_pass`, :func:`paa_anchor_scores`, :func:`paa_reassign`.

    Args:
        inputs: the batch (:class:`AssignInputs`).
        pos_iou, neg_iou: the first pass's IoU thresholds (0.1, 0.1).
        topk: candidates per GT and level (9).
        focal_alpha, focal_gamma, giou_weight: the anchor score's focal loss and GIoU weight (0.25, 2, 1.3).

    Returns:
        :class:`Assignment` with ``matched`` [B, N] (GT index, BACKGROUND, or IGNORE when
        ``pos_iou`` > ``neg_iou``); no quality.
    """
    if inputs.gt_mask.shape[1] == 0 or inputs.priors.shape[0] == 0:
        return all_background(inputs)
    first_pass = paa_first_pass(inputs.priors, inputs.gt_boxes, inputs.gt_mask, pos_iou=pos_iou, neg_iou=neg_iou)
    scores = paa_anchor_scores(
        inputs.cls_logits,
        inputs.pred_boxes,
        first_pass,
        inputs.gt_boxes,
        inputs.gt_labels,
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
        giou_weight=giou_weight,
    )
    return Assignment(paa_reassign(first_pass, scores, inputs.num_per_level, inputs.gt_mask.shape[1], topk=topk))
