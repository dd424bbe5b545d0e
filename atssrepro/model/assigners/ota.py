"""Optimal transport assignment (OTA, Ge et al., CVPR 2021), as its own code does it
(Megvii-BaseDetection/OTA, ``ota.res50.fpn.coco.800size.1x/fcos.py``: ``get_ground_truth``, ``SinkhornDistance``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from atssrepro.model.assign import BACKGROUND, CENTRE_EPS
from atssrepro.model.assigners.common import AssignInputs, Assignment, all_background

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
"""The classification cost is the training focal loss (OTA's config: 0.25, 2; the detector's too)."""
NOT_CANDIDATE_COST = 1e6
LOG_EPS = 1e-8
"""Added to the supplies and demands before their log (``SinkhornDistance``)."""
IOU_EPS = torch.finfo(torch.float32).eps
"""Floor of the union and of the IoU under its log (``get_ious_and_iou_loss``)."""


def ota_cost(
    inputs: AssignInputs, *, reg_weight: float = 1.5, center_radius: float = 2.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OTA's transport costs, the IoUs and the candidate pairs.

    A prior is a candidate of a GT when its centre lies inside the GT box (every side distance
    > 0.01) and inside the GT's centre square clipped to the box (GT centre +- center_radius x
    stride; distances > 0). Cost(GT, prior) = the focal loss (0.25, 2) of the prior's logits
    against the GT's one-hot class, summed over classes, + reg_weight x -log(IoU) (IoU floored at
    float32 eps), + 1e6 if not a candidate. Cost(background, prior) = the focal loss against all
    zeros, summed. The IoU is computed as the reference does, from the (l, t, r, b) distances of
    the predicted box and the GT to the prior's centre.

    Returns:
        cost [B, G, N], background cost [B, N], IoU [B, G, N], candidate [B, G, N] bool.
    """
    gt_boxes = inputs.gt_boxes.float()
    centres = inputs.centres
    x, y = centres[:, 0], centres[:, 1]
    gx1, gy1, gx2, gy2 = (gt_boxes[..., i, None] for i in range(4))  # [B, G, 1] each
    gt_l, gt_t, gt_r, gt_b = x - gx1, y - gy1, gx2 - x, gy2 - y  # [B, G, N]
    in_box = torch.minimum(torch.minimum(gt_l, gt_t), torch.minimum(gt_r, gt_b)) > CENTRE_EPS
    # The square clipped to the box differs per level: each side [B, G, N]. Its radius is the
    # reference's float (stride x radius in double precision).
    radius = (inputs.strides.double() * center_radius).float()
    cx, cy = ((gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2).unbind(-1)  # [B, G]
    margin = None
    for coordinate, centre, limit, lower in (
        (x, cx, gx1, True),
        (y, cy, gy1, True),
        (x, cx, gx2, False),
        (y, cy, gy2, False),
    ):
        if lower:
            distance = coordinate - torch.maximum(centre[..., None] - radius, limit)
        else:
            distance = torch.minimum(centre[..., None] + radius, limit) - coordinate
        margin = distance if margin is None else torch.minimum(margin, distance, out=margin)
    candidate = in_box.logical_and_(margin > 0)
    del margin, distance

    # The reference's IoU of both boxes relative to the prior's centre, as (-l, -t, r, b): there a
    # width r - (-l) is r + l and min(r, r') - max(-l, -l') is min(r, r') + min(l, l'), exactly.
    pred = inputs.pred_boxes.float()
    pl, pt = (x - pred[..., 0])[:, None], (y - pred[..., 1])[:, None]  # [B, 1, N]
    pr, pb = (pred[..., 2] - x)[:, None], (pred[..., 3] - y)[:, None]
    pred_area = (pr + pl).clamp(min=0) * (pb + pt).clamp(min=0)
    overlap = torch.minimum(pr, gt_r).add_(torch.minimum(pl, gt_l)).clamp_(min=0)
    overlap.mul_(torch.minimum(pb, gt_b).add_(torch.minimum(pt, gt_t)).clamp_(min=0))
    gt_area = gt_r.add_(gt_l).clamp_(min=0).mul_(gt_b.add_(gt_t).clamp_(min=0))
    del gt_l, gt_t, gt_b
    ious = overlap.div_(gt_area.add_(pred_area).sub_(overlap).clamp_(min=IOU_EPS))
    cost = ious.clamp(min=IOU_EPS).log_().neg_().mul_(reg_weight)

    # Focal loss summed over classes: the all-zero-target sum with the GT class's term swapped.
    logits = inputs.cls_logits.float()
    background = sigmoid_focal_loss(logits, torch.zeros_like(logits), FOCAL_ALPHA, FOCAL_GAMMA).sum(dim=-1)
    gt_logits = inputs.gt_class_columns(logits)  # [B, G, N]
    cost.add_(_focal(gt_logits, positive=True).sub_(_focal(gt_logits, positive=False)).add_(background[:, None, :]))
    cost.add_(~candidate, alpha=NOT_CANDIDATE_COST)  # + exactly 1e6 or 0
    return cost, background, ious, candidate


def _focal(logits: torch.Tensor, positive: bool) -> torch.Tensor:
    """The focal loss (0.25, 2) of each logit against an all-one or all-zero target, as torchvision's
    ``sigmoid_focal_loss`` computes it, without a target tensor."""
    if positive:  # BCE -log sigmoid(x); 1 - p_t = 1 - p
        modulation = logits.sigmoid().neg_().add_(1).pow_(FOCAL_GAMMA)
        return F.logsigmoid(logits).neg_().mul_(modulation).mul_(FOCAL_ALPHA)
    # BCE x - log sigmoid(x); 1 - p_t = 1 - (1 - p)
    modulation = logits.sigmoid().neg_().add_(1).neg_().add_(1).pow_(FOCAL_GAMMA)
    return torch.sub(logits, F.logsigmoid(logits)).mul_(modulation).mul_(1 - FOCAL_ALPHA)


def _logsumexp_(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp``'s own steps (equal results), overwriting ``x``; on the CPU, over a non-inner
    dimension, 20x faster."""
    largest = x.amax(dim, keepdim=True)
    largest.masked_fill_(largest.abs() == float("inf"), 0.0)
    return x.sub_(largest).exp_().sum(dim).log_().add_(largest.squeeze(dim))


def sinkhorn(
    cost: torch.Tensor,
    supply: torch.Tensor,
    demand: torch.Tensor,
    row_mask: torch.Tensor,
    eps: float = 0.1,
    iterations: int = 50,
) -> torch.Tensor:
    """The entropic optimal-transport plan, by Sinkhorn iterations in the log domain (``SinkhornDistance``).

    u and v start at ones; each iteration sets v += eps (log(demand + 1e-8) - logsumexp over rows
    of M), then u likewise over columns with the supplies, M = (-cost + u + v) / eps; the plan is
    exp(M). Rows outside ``row_mask`` (padding) take no part and get a zero plan.

    Args:
        cost: [B, R, N] float. supply: [B, R]. demand: [B, N]. row_mask: [B, R] bool.

    Returns:
        [B, R, N] plan.
    """
    neg_cost = cost.masked_fill(~row_mask[..., None], float("inf")).neg_()
    log_supply, log_demand = torch.log(supply + LOG_EPS), torch.log(demand + LOG_EPS)
    u, v = torch.ones_like(supply), torch.ones_like(demand)
    scaled = torch.empty_like(neg_cost)  # M, rebuilt in this one buffer

    def rebuild() -> torch.Tensor:
        return torch.add(neg_cost, u[..., None], out=scaled).add_(v[:, None, :]).div_(eps)

    for _ in range(iterations):
        v = eps * (log_demand - _logsumexp_(rebuild(), dim=1)) + v
        u = torch.where(row_mask, eps * (log_supply - _logsumexp_(rebuild(), dim=2)) + u, u)
    return rebuild().exp_()


def ota(
    inputs: AssignInputs,
    *,
    top_candidates: int = 20,
    reg_weight: float = 1.5,
    sinkhorn_eps: float = 0.1,
    sinkhorn_iterations: int = 50,
    center_radius: float = 2.5,
) -> Assignment:
    """Optimal transport assignment.

    Each GT supplies k = max(1, int(sum of its ``top_candidates`` largest IoU x candidate)) units
    and the background supplies the rest of the N priors; each prior demands 1. The plan of
    :func:`sinkhorn` on the costs of :func:`ota_cost` (background last) is divided by each
    supplier's largest entry, and each prior takes the supplier of its largest value (the lowest
    GT index on a tie, the background last): a GT makes it positive, the background negative.
    There are no ignored priors.

    Args:
        inputs: the batch (:class:`AssignInputs`).
        top_candidates: IoUs summed for each GT's supply (20).
        reg_weight: weight of the IoU cost (1.5).
        sinkhorn_eps, sinkhorn_iterations: the regularisation and iterations of :func:`sinkhorn` (0.1, 50).
        center_radius: half-side of the centre square, in strides (2.5).

    Returns:
        :class:`Assignment` with ``matched`` [B, N] (GT index or BACKGROUND); no quality.
    """
    gt_mask = inputs.gt_mask
    num_gt, num_priors = gt_mask.shape[1], inputs.priors.shape[0]
    if num_gt == 0 or num_priors == 0:
        return all_background(inputs)
    cost, background, ious, candidate = ota_cost(inputs, reg_weight=reg_weight, center_radius=center_radius)
    top = (ious * candidate.float()).topk(min(top_candidates, num_priors), dim=-1).values
    supply = torch.where(gt_mask, top.sum(dim=-1).int().clamp(min=1).float(), 0.0)  # [B, G]
    supply = torch.cat([supply, (num_priors - supply.sum(dim=1))[:, None]], dim=1)  # [B, G + 1]
    row_mask = torch.cat([gt_mask, gt_mask.new_ones(len(gt_mask), 1)], dim=1)
    all_cost = torch.cat([cost, background[:, None]], dim=1)
    plan = sinkhorn(all_cost, supply, torch.ones_like(background), row_mask, sinkhorn_eps, sinkhorn_iterations)
    scaled = torch.where(row_mask[..., None], plan / plan.amax(dim=-1, keepdim=True), -1.0)
    supplier = scaled.argmax(dim=1)  # [B, N], first index on ties
    return Assignment(torch.where(supplier < num_gt, supplier, BACKGROUND))
