"""Training losses, normalised as the official code does it (ATSS and FCOS globally, RetinaNet per GPU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from atssrepro import distributed
from atssrepro.config import LossConfig
from atssrepro.model.anchors import box_centres
from atssrepro.model.assign import IGNORE
from atssrepro.model.box_coder import BoxCoder

GIOU_EPS = 1e-7
QFL_BETA = 2.0
"""The quality focal loss's exponent (GFL; TOOD's ``QualityFocalLoss(beta=2.0)``)."""


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


@dataclass
class LossTerms:
    """The un-normalised losses of one padding group, and what their normalisers count.

    Scalars (0-d float32 tensors): ``cls`` the focal-loss sum over non-ignored anchors; ``reg`` the
    regression-loss sum (weighted by ``reg_weights`` for the IoU losses); ``centerness`` the BCE sum,
    or None without the branch; ``num_pos`` the positives; ``weight_sum`` the sum of the regression
    weights (centerness targets, or 1 per positive without centerness); ``num_images`` the images.
    """

    cls: torch.Tensor
    reg: torch.Tensor
    centerness: torch.Tensor | None
    num_pos: torch.Tensor
    weight_sum: torch.Tensor
    num_images: int


def ltrb_iou_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """FCOS's ``IOULoss`` on (l, t, r, b) distances from one point to two boxes.

    The IoU is smoothed by one unit of the distances' own scale, (inter + 1) / (union + 1); on
    stride-normalised distances that is one stride squared. ``kind`` ``iou``: -log IoU (FCOS);
    ``giou``: 1 - GIoU, the enclosing box taken with an eps of 1e-7 (FCOS imprv).

    Args:
        pred, target: [..., 4] non-negative (l, t, r, b).

    Returns:
        [...] losses.
    """
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    inter = (torch.minimum(pl, tl) + torch.minimum(pr, tr)) * (torch.minimum(pt, tt) + torch.minimum(pb, tb))
    union = (pl + pr) * (pt + pb) + (tl + tr) * (tt + tb) - inter
    iou = (inter + 1.0) / (union + 1.0)
    if kind == "iou":
        return -torch.log(iou)
    enclosing = (torch.maximum(pl, tl) + torch.maximum(pr, tr)) * (torch.maximum(pt, tt) + torch.maximum(pb, tb))
    enclosing = enclosing + 1e-7
    return 1.0 - (iou - (enclosing - union) / enclosing)


def quality_focal_loss(logits: torch.Tensor, targets: torch.Tensor, beta: float = QFL_BETA) -> torch.Tensor:
    """The quality focal loss (Li et al., GFL, 2020) of each logit against a soft target in [0, 1]:
    BCE-with-logits(x, y) x |y - sigmoid(x)|^beta, elementwise. On a negative (y = 0) it is
    mmdetection's ``quality_focal_loss`` term BCE(x, 0) x sigmoid(x)^beta; on a positive's own class,
    BCE(x, y) x |y - sigmoid(x)|^beta. No alpha.

    Args:
        logits, targets: [..., C] float.

    Returns:
        [..., C] losses.
    """
    modulation = (targets - logits.sigmoid()).abs().pow(beta)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * modulation


def loss_terms(
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
    quality: torch.Tensor | None = None,
) -> LossTerms:
    """The loss sums of one padding group: focal loss, regression loss and centerness BCE.

    With ``quality`` (TAL's soft targets), the classification target of a positive's class is its
    quality instead of 1, and the loss is the quality focal loss (:func:`quality_focal_loss`) instead of
    the focal loss; everything else, the normalisers included, stays (docs/semantics.md).

    Regression: GIoU on decoded boxes (``giou``), smooth-L1 on encoded targets (``smooth_l1``), or
    FCOS's IoU losses on the stride-normalised (l, t, r, b) (``ltrb_iou``, ``ltrb_giou``, point
    regression). The IoU losses weight each positive by its centerness target when there is a
    centerness branch (official ATSS and FCOS) and by 1 otherwise.

    Args:
        cls_logits: [B, N, C]. box_regression: [B, N, 4]. centerness: [B, N] logits or None.
        anchors: [N, 4] xyxy. strides: [N] stride of each anchor's level.
        matched: [B, N] from an assigner (GT index, BACKGROUND or IGNORE).
        gt_boxes: [B, G, 4] xyxy. gt_labels: [B, G] int64.
        coder: how ``box_regression`` encodes boxes.
        quality: [B, N] soft targets in [0, 1] of the positives (any value elsewhere), or None.
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
    if quality is None:
        cls_loss = sigmoid_focal_loss(cls_logits, cls_targets, config.focal_alpha, config.focal_gamma, reduction="none")
    else:
        soft = torch.where(positive, quality.float(), 0.0)
        cls_loss = quality_focal_loss(cls_logits, cls_targets * soft.unsqueeze(-1))
    cls_loss = cls_loss * (matched != IGNORE).unsqueeze(-1)

    matched_gt = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(-1, -1, 4))  # [B, N, 4]
    # where() keeps the NaN of degenerate (anchor, non-matched box) pairs out of the targets.
    ctr_targets = torch.where(positive, centerness_target(box_centres(anchors), matched_gt), 0.0)  # [B, N]
    reg_weights = ctr_targets if centerness is not None else positive.float()

    if config.regression == "giou":
        # Decoded boxes have positive width and height (exp of deltas, or ReLU'd distances).
        pred_boxes = coder.decode(anchors, strides, box_regression)  # [B, N, 4]
        giou = generalized_box_iou_loss(pred_boxes, matched_gt, reduction="none", eps=GIOU_EPS)
        reg_sum = (giou * reg_weights).sum()
    else:
        # Encoding a non-matched box can give -inf or negative distances: a harmless target instead.
        encoded = coder.encode(anchors, strides, matched_gt)
        mask = positive.unsqueeze(-1)
        if config.regression == "smooth_l1":
            targets = torch.where(mask, encoded, 0.0)
            smooth_l1 = F.smooth_l1_loss(box_regression, targets, beta=config.smooth_l1_beta, reduction="none")
            reg_sum = (smooth_l1 * mask).sum()
        else:
            targets = torch.where(mask, encoded, 1.0)
            kind = "iou" if config.regression == "ltrb_iou" else "giou"
            reg_sum = (ltrb_iou_loss(box_regression, targets, kind) * reg_weights).sum()

    ctr_sum = None
    if centerness is not None:
        ctr_sum = F.binary_cross_entropy_with_logits(
            centerness.float(), ctr_targets, weight=positive.float(), reduction="sum"
        )
    return LossTerms(
        cls=cls_loss.sum(),
        reg=reg_sum,
        centerness=ctr_sum,
        num_pos=positive.sum().float(),
        weight_sum=reg_weights.sum(),
        num_images=len(matched),
    )


def combine_losses(groups: list[LossTerms], config: LossConfig) -> dict[str, torch.Tensor]:
    """The normalised losses of this process: the mean over its padding groups of each group's loss.

    Every process has the same number of groups and DDP averages gradients over processes, so the
    gradient is the mean over all groups of the run, as the official code's mean over its GPUs (one
    group per GPU), whatever the number of processes. Normalisers (``config.normalizer``):

    - ``atss`` (official ATSS and FCOS): classification and centerness by max(mean #positives per
      group over all groups, 1); the IoU losses by the mean sum of their weights per group (1 when
      that is 0); smooth-L1 by 4 x that mean #positives. One all-reduce, which every process enters
      also when it has no positive.
    - ``retinanet`` (maskrcnn-benchmark RetinaNet, per GPU): each group's classification by its own
      #positives + #images and its smooth-L1 by max(1, 4 x its #positives); no all-reduce.

    Returns:
        ``{"cls", "reg"}`` and ``"centerness"`` when the branch exists: scalar float32 tensors.
    """
    count = len(groups)
    if config.normalizer == "retinanet":
        cls = sum(g.cls / (g.num_pos + g.num_images) for g in groups) / count
        reg = sum(g.reg / (4 * g.num_pos).clamp(min=1.0) for g in groups) / count
        return {"cls": cls, "reg": config.reg_weight * reg}

    per_group = torch.stack([torch.stack([g.num_pos, g.weight_sum]) for g in groups]).mean(0)
    totals = distributed.all_reduce_mean(per_group)
    num_pos = totals[0].clamp(min=1.0)
    weight_sum = torch.where(totals[1] > 0, totals[1], torch.ones_like(totals[1]))
    reg_normaliser = 4 * num_pos if config.regression == "smooth_l1" else weight_sum
    losses = {
        "cls": sum(g.cls for g in groups) / count / num_pos,
        "reg": config.reg_weight * sum(g.reg for g in groups) / count / reg_normaliser,
    }
    if groups[0].centerness is not None:
        losses["centerness"] = sum(g.centerness for g in groups) / count / num_pos
    return losses
