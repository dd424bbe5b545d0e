"""Training losses, normalised exactly as the official ATSS code does it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from atssrepro import distributed
from atssrepro.config import LossConfig
from atssrepro.model.anchors import box_centres
from atssrepro.model.assign import IGNORE
from atssrepro.model.box_coder import BoxCoder

GIOU_EPS = 1e-7


def centerness_target(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """FCOS centerness of each point in its box: sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)).

    Args:
        points: [..., 2] (x, y), inside ``boxes``.
        boxes: [..., 4] xyxy, broadcastable with ``points``.

    Returns:
        [...] in [0, 1]; a point outside its box (possible with IoU assignment) gets 0.
    """
    left, top = points[..., 0] - boxes[..., 0], points[..., 1] - boxes[..., 1]
    right, bottom = boxes[..., 2] - points[..., 0], boxes[..., 3] - points[..., 1]
    lr = torch.minimum(left, right) / torch.maximum(left, right)
    tb = torch.minimum(top, bottom) / torch.maximum(top, bottom)
    return torch.sqrt((lr * tb).clamp(min=0))


def detection_losses(
    cls_logits: torch.Tensor,
    box_regression: torch.Tensor,
    centerness: torch.Tensor | None,
    anchors: torch.Tensor,
    strides: torch.Tensor,
    matched: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    coder: BoxCoder,
    config: LossConfig,
) -> dict[str, torch.Tensor]:
    """Focal loss, regression loss (GIoU or smooth-L1) and centerness BCE.

    Normalisers are averaged over all ranks, so the gradient does not depend on how the batch
    is split across GPUs: classification and centerness by max(mean #positives, 1); GIoU by the
    mean sum of its weights, which are the centerness targets when there is a centerness branch
    (official ATSS) and 1 otherwise; smooth-L1 by 4 x #positives (RetinaNet's per-coordinate
    mean). Every rank enters the one all-reduce, also when it has no positive.

    Args:
        cls_logits: [B, N, C]. box_regression: [B, N, 4]. centerness: [B, N] logits or None.
        anchors: [N, 4] xyxy. strides: [N] stride of each anchor's level.
        matched: [B, N] from an assigner (GT index, BACKGROUND or IGNORE).
        gt_boxes: [B, G, 4] xyxy. gt_labels: [B, G] int64.
        coder: how ``box_regression`` encodes boxes.

    Returns:
        ``{"cls", "reg"}`` and ``"centerness"`` when the branch exists: scalar float32 tensors.
    """
    # Every anchor is computed and the others weighted 0: selecting the positives (boolean
    # indexing, nonzero, any) would make the host wait for the GPU in every step.
    cls_logits, box_regression = cls_logits.float(), box_regression.float()
    num_classes = cls_logits.shape[-1]
    positive = matched >= 0  # [B, N]
    gt_index = matched.clamp(min=0)
    if gt_boxes.shape[1] == 0:  # no GT at all: give gather a dummy column that no positive uses
        gt_boxes, gt_labels = gt_boxes.new_zeros(len(gt_boxes), 1, 4), gt_labels.new_zeros(len(gt_labels), 1)

    labels = torch.where(positive, gt_labels.gather(1, gt_index), num_classes)  # [B, N]; background = C
    cls_targets = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(cls_logits.dtype)
    cls_loss = sigmoid_focal_loss(cls_logits, cls_targets, config.focal_alpha, config.focal_gamma, reduction="none")
    cls_loss = cls_loss * (matched != IGNORE).unsqueeze(-1)

    matched_gt = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))  # [B, N, 4]
    # Where() keeps the NaN of degenerate (anchor, non-matched box) pairs out of the targets.
    ctr_targets = torch.where(positive, centerness_target(box_centres(anchors), matched_gt), 0.0)  # [B, N]
    reg_weights = ctr_targets if centerness is not None else positive.float()

    totals = distributed.all_reduce_mean(torch.stack([positive.sum().float(), reg_weights.sum()]))
    num_pos = totals[0].clamp(min=1.0)
    weight_sum = torch.where(totals[1] > 0, totals[1], torch.ones_like(totals[1]))

    if config.regression == "giou":
        # Decoded boxes have positive width and height (exp of deltas, or ReLU'd distances).
        pred_boxes = coder.decode(anchors, strides, box_regression)  # [B, N, 4]
        giou = generalized_box_iou_loss(pred_boxes, matched_gt, reduction="none", eps=GIOU_EPS)
        reg_loss = (giou * reg_weights).sum() / weight_sum
    else:
        # Encoding a non-matched box can give -inf (log of a zero width): zero targets instead.
        targets = torch.where(positive.unsqueeze(-1), coder.encode(anchors, strides, matched_gt), 0.0)
        smooth_l1 = F.smooth_l1_loss(box_regression, targets, beta=config.smooth_l1_beta, reduction="none")
        reg_loss = (smooth_l1 * positive.unsqueeze(-1)).sum() / (4 * num_pos)

    losses = {"cls": cls_loss.sum() / num_pos, "reg": config.reg_weight * reg_loss}
    if centerness is not None:
        ctr_loss = F.binary_cross_entropy_with_logits(
            centerness.float(), ctr_targets, weight=positive.float(), reduction="sum"
        )
        losses["centerness"] = ctr_loss / num_pos
    return losses
