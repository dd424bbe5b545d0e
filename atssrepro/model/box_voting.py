"""Soft box voting: how the official multi-scale test merges the detections of all its passes.

This is ``MERGE_TYPE "soft-vote"`` of the official ``TEST.BBOX_AUG`` code, written for torch tensors.
Boxes are xyxy with no "+1", as everywhere in atssrepro.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou


def soft_vote(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    vote_iou: float = 0.66,
    score_threshold: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge the overlapping detections of each class into one box, keeping decayed copies.

    Per class, greedily from the highest score: the best remaining box and every remaining box with
    an IoU of at least ``vote_iou`` with it leave the pool together. They become one box, the
    score-weighted mean of their coordinates, with their highest score. Each of them but the best is
    also kept unchanged with its score decayed by (1 - IoU with the best), when that decayed score is
    still at least ``score_threshold``.

    Args:
        boxes: [D, 4] xyxy. scores: [D]. labels: [D] int64.

    Returns:
        (boxes [K, 4], scores [K], labels [K]), by decreasing score.
    """
    kept_boxes, kept_scores, kept_labels = [boxes[:0]], [scores[:0]], [labels[:0]]
    for label in labels.unique():
        mine = labels == label
        class_boxes, class_scores = _vote_one_class(boxes[mine], scores[mine], vote_iou, score_threshold)
        kept_boxes.append(class_boxes)
        kept_scores.append(class_scores)
        kept_labels.append(label.expand(len(class_scores)))
    scores = torch.cat(kept_scores)
    order = scores.argsort(descending=True, stable=True)
    return torch.cat(kept_boxes)[order], scores[order], torch.cat(kept_labels)[order]


def _vote_one_class(
    boxes: torch.Tensor, scores: torch.Tensor, vote_iou: float, score_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``soft_vote`` for the boxes [N, 4] and scores [N] of one class."""
    order = scores.argsort(descending=True, stable=True)
    boxes, scores = boxes[order], scores[order]
    iou = box_iou(boxes, boxes)  # [N, N]
    remaining = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    out_boxes, out_scores = [boxes[:0]], [scores[:0]]
    for top in range(len(boxes)):  # each group's best box is the first one still in the pool
        if not remaining[top]:
            continue
        group = remaining & (iou[top] >= vote_iou)
        group[top] = True  # a zero-area box has a NaN IoU with itself
        remaining &= ~group
        weights = scores[group, None]
        out_boxes.append((weights * boxes[group]).sum(0, keepdim=True) / weights.sum())
        out_scores.append(scores[top, None])

        group[top] = False
        decayed = scores[group] * (1 - iou[top, group])
        soft = decayed >= score_threshold
        out_boxes.append(boxes[group][soft])
        out_scores.append(decayed[soft])
    return torch.cat(out_boxes), torch.cat(out_scores)
