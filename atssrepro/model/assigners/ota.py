"""Optimal transport assignment (OTA, Ge et al., CVPR 2021), as its own code does it
(Megvii-BaseDetection/OTA, ``ota.res50.fpn.coco.800size.1x/fcos.py``: ``get_ground_truth``, ``SinkhornDistance``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    x, y = inputs.centres[:, 0], inputs.centres[:, 1]
    gx1, gy1, gx2, gy2 = (gt_boxes[..., i, None] for i in range(4))  # [B, G, 1] each
    gt_l, gt_t, gt_r, gt_b = x - gx1, y - gy1, gx2 - x, gy2 - y  # [B, G, N]
    candidate = ota_candidates(inputs, center_radius)

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
    background = _focal(logits, positive=False).sum(dim=-1)  # [B, N]
    gt_logits = inputs.gt_class_columns(logits)  # [B, G, N]
    cost.add_(_focal(gt_logits, positive=True).sub_(_focal(gt_logits, positive=False)).add_(background[:, None, :]))
    cost.add_(~candidate, alpha=NOT_CANDIDATE_COST)  # + exactly 1e6 or 0
    return cost, background, ious, candidate


def ota_candidates(inputs: AssignInputs, center_radius: float = 2.5) -> torch.Tensor:
    """OTA's candidates [B, G, N] bool: the prior's centre inside the GT box (every side distance > 0.01)
    and inside the GT's centre square clipped to the box (GT centre +- center_radius x stride; > 0).

    Both tests hold in x and in y separately, and a level's priors share few distinct x and y: each
    test is computed per GT on those values ([B, G, distinct x] and [B, G, distinct y], the same
    floats as per prior) and read for every prior.
    """
    gt_boxes = inputs.gt_boxes.float()
    centres = inputs.centres
    # The square clipped to the box differs per level. Its radius is the reference's float (stride x
    # radius in double precision).
    radius = (inputs.strides.double() * center_radius).float()
    box_centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # [B, G, 2]
    candidate, start = [], 0
    for count in (c for c in inputs.num_per_level if c > 0):
        inside = None
        for axis in (0, 1):
            values, index = centres[start : start + count, axis].unique(return_inverse=True)
            low, high = gt_boxes[..., axis, None], gt_boxes[..., axis + 2, None]  # [B, G, 1]
            centre, level_radius = box_centres[..., axis, None], radius[start]
            ok = (values - low > CENTRE_EPS).logical_and_(high - values > CENTRE_EPS)  # [B, G, U]
            ok.logical_and_(values - torch.maximum(centre - level_radius, low) > 0)
            ok.logical_and_(torch.minimum(centre + level_radius, high) - values > 0)
            inside = ok[..., index] if inside is None else inside.logical_and_(ok[..., index])
        candidate.append(inside)
        start += count
    if not candidate:
        return torch.zeros(*inputs.gt_mask.shape, 0, dtype=torch.bool, device=gt_boxes.device)
    return torch.cat(candidate, dim=-1)


def _pair_costs(
    inputs: AssignInputs, b: torch.Tensor, g: torch.Tensor, j: torch.Tensor, background: torch.Tensor, reg_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The IoU and the cost of :func:`ota_cost` at the (image, GT, prior) pairs ``b, g, j`` of a candidate,
    by the same elementwise operations in the same order (the same floats), without a [B, G, N] tensor."""
    box = inputs.gt_boxes.float()[b, g]  # [E, 4]
    x, y = inputs.centres[j, 0], inputs.centres[j, 1]
    gt_l, gt_t, gt_r, gt_b = x - box[:, 0], y - box[:, 1], box[:, 2] - x, box[:, 3] - y
    pred = inputs.pred_boxes.float()[b, j]
    pl, pt, pr, pb = x - pred[:, 0], y - pred[:, 1], pred[:, 2] - x, pred[:, 3] - y
    pred_area = (pr + pl).clamp(min=0) * (pb + pt).clamp(min=0)
    overlap = torch.minimum(pr, gt_r).add_(torch.minimum(pl, gt_l)).clamp_(min=0)
    overlap.mul_(torch.minimum(pb, gt_b).add_(torch.minimum(pt, gt_t)).clamp_(min=0))
    gt_area = gt_r.add_(gt_l).clamp_(min=0).mul_(gt_b.add_(gt_t).clamp_(min=0))
    ious = overlap.div_(gt_area.add_(pred_area).sub_(overlap).clamp_(min=IOU_EPS))
    cost = ious.clamp(min=IOU_EPS).log_().neg_().mul_(reg_weight)
    gt_logits = inputs.cls_logits.float()[b, j, inputs.gt_labels[b, g]]
    cost.add_(_focal(gt_logits, positive=True).sub_(_focal(gt_logits, positive=False)).add_(background[b, j]))
    return ious, cost


def _focal(logits: torch.Tensor, positive: bool) -> torch.Tensor:
    """The focal loss (0.25, 2) of each logit against an all-one or all-zero target, as torchvision's
    ``sigmoid_focal_loss`` computes it (the same floats), without a target tensor."""
    if positive:  # BCE -log sigmoid(x); 1 - p_t = 1 - p
        modulation = logits.sigmoid().neg_().add_(1).pow_(FOCAL_GAMMA)
        return F.logsigmoid(logits).neg_().mul_(modulation).mul_(FOCAL_ALPHA)
    # BCE x - log sigmoid(x); 1 - p_t = 1 - (1 - p)
    modulation = logits.sigmoid().neg_().add_(1).neg_().add_(1).pow_(FOCAL_GAMMA)
    return torch.sub(logits, F.logsigmoid(logits)).mul_(modulation).mul_(1 - FOCAL_ALPHA)


UNDERFLOW = -104.0
"""exp(x) of float32 is exactly 0 for x <= -104 (below half the smallest subnormal)."""


def _exp_(x: torch.Tensor) -> torch.Tensor:
    """``x.exp_()``, the same floats: an argument that underflows is set to -inf first, whose exp the CPU
    kernels compute 5x faster than that of a large negative number (most of the Sinkhorn terms)."""
    return x.masked_fill_(x < UNDERFLOW, float("-inf")).exp_()


def _logsumexp_(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp``'s own steps (equal results), overwriting ``x``; on the CPU, over a non-inner
    dimension, 20x faster."""
    largest = x.amax(dim, keepdim=True)
    largest.masked_fill_(largest.abs() == float("inf"), 0.0)
    return _exp_(x.sub_(largest)).sum(dim).log_().add_(largest.squeeze(dim))


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
    return _exp_(rebuild())


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
    candidate = ota_candidates(inputs, center_radius).logical_and_(gt_mask[..., None])
    # A GT without a candidate spreads its supply over priors of cost >= 1e6: all its pairs count.
    wide = gt_mask & ~candidate.any(dim=-1)  # [B, G]
    logits = inputs.cls_logits.float()
    background = _focal(logits, positive=False).sum(dim=-1)  # [B, N]
    b, g, j = (candidate | wide[..., None]).nonzero(as_tuple=True)  # by image, GT, then prior
    ious, cost = _pair_costs(inputs, b, g, j, background, reg_weight)
    is_candidate = candidate[b, g, j]
    cost.add_(~is_candidate, alpha=NOT_CANDIDATE_COST)  # + exactly 1e6 or 0, as ota_cost
    pairs = _Pairs(b, g, j, cost.neg_(), wide, candidate.shape)
    # Each GT's candidate IoUs, padded with zeros to at least top_candidates: the dense top values.
    k = min(top_candidates, num_priors)
    rows = b[is_candidate] * num_gt + g[is_candidate]
    count = torch.bincount(rows, minlength=len(gt_mask) * num_gt)
    slot = torch.arange(len(rows), device=rows.device) - (count.cumsum(0) - count)[rows]
    table = ious.new_zeros(len(gt_mask) * num_gt, max(int(count.max()) if len(rows) else 0, k))
    table[rows, slot] = ious[is_candidate]
    top = table.topk(k, dim=-1).values.view(len(gt_mask), num_gt, k)
    return Assignment(
        pairs.assign(background, _supplies(top, gt_mask, num_priors), gt_mask, sinkhorn_eps, sinkhorn_iterations)
    )


def _supplies(top: torch.Tensor, gt_mask: torch.Tensor, num_priors: int) -> torch.Tensor:
    """Each GT's k = max(1, int(sum of its top IoUs [B, G, k])), the background the rest of the N priors:
    [B, G + 1]."""
    supply = torch.where(gt_mask, top.sum(dim=-1).int().clamp(min=1).float(), 0.0)  # [B, G]
    return torch.cat([supply, (num_priors - supply.sum(dim=1))[:, None]], dim=1)


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values.flatten()[index]`` (index of any shape), by ``index_select``: on the CPU several times faster
    than indexing with one index tensor per dimension."""
    return values.reshape(-1).index_select(0, index.reshape(-1)).view(index.shape)


class _Pairs:
    """The (GT, prior) pairs that take part in OTA's transport, as padded tables: each GT's priors
    [B x G, K] (a GT without a candidate: all N priors, in a table of its own [R, N]) and each prior's
    GTs [B x N, Kc], both in increasing index order.

    A pair that is no candidate of a GT that has one costs 1e6 more than the GT's candidates, so its
    Sinkhorn term exp(-cost / eps) is exactly 0 in float32 and its plan entry is 0: such a GT's row is
    a sum over its candidates, and a prior's column a sum over its pairs' GTs and the background, in
    the dense order (GTs by index, the background last). :meth:`assign` is :func:`sinkhorn` and the
    argmax of :func:`ota` on these tables: O(pairs + N) per iteration, not O(G x N).
    """

    def __init__(
        self,
        b: torch.Tensor,
        g: torch.Tensor,
        j: torch.Tensor,
        neg_cost: torch.Tensor,
        wide: torch.Tensor,
        shape: torch.Size,
    ) -> None:
        """``b, g, j``: the pairs, row-major (image, GT, prior); ``neg_cost``: their -cost; ``wide``: [B, G]
        the GTs without a candidate, whose pairs are all N priors; ``shape``: B, G, N."""
        batch, num_gt, num_priors = shape
        row = b * num_gt + g
        wide = wide.reshape(-1)
        narrow = ~wide[row]
        self.wide_rows = wide.nonzero().squeeze(1)  # [R]
        self.wide_neg_cost = neg_cost[~narrow].view(len(self.wide_rows), num_priors)
        row, j_narrow, cost_narrow = row[narrow], j[narrow], neg_cost[narrow]
        row_count = torch.bincount(row, minlength=batch * num_gt)
        width = max(int(row_count.max()) if len(row) else 0, 1)
        slot = torch.arange(len(row), device=row.device) - (row_count.cumsum(0) - row_count)[row]
        self.row_prior = row.new_zeros(batch * num_gt, width)
        self.row_prior[row, slot] = j_narrow
        self.row_neg_cost = neg_cost.new_full((batch * num_gt, width), float("-inf"))
        self.row_neg_cost[row, slot] = cost_narrow
        column = b * num_priors + j
        order = torch.argsort(column * num_gt + g)  # by column, then GT index
        column = column[order]
        column_count = torch.bincount(column, minlength=batch * num_priors)
        depth = max(int(column_count.max()) if len(column) else 0, 1)
        slot = torch.arange(len(column), device=column.device) - (column_count.cumsum(0) - column_count)[column]
        self.column_gt = row.new_zeros(batch * num_priors, depth)
        self.column_gt[column, slot] = g[order]
        self.column_neg_cost = neg_cost.new_full((batch * num_priors, depth), float("-inf"))
        self.column_neg_cost[column, slot] = neg_cost[order]
        self.shape = (batch, num_gt, num_priors)

    def assign(
        self, background: torch.Tensor, supply: torch.Tensor, gt_mask: torch.Tensor, eps: float, iterations: int
    ) -> torch.Tensor:
        batch, num_gt, num_priors = self.shape
        log_supply = torch.log(supply + LOG_EPS)  # [B, G + 1]
        log_demand = torch.log(torch.ones_like(background) + LOG_EPS)
        neg_bg = background.neg()  # [B, N]
        u, v = torch.ones_like(supply), torch.ones_like(background)
        image_of_row = torch.arange(batch, device=u.device).repeat_interleave(num_gt)
        image_of_column = torch.arange(batch, device=u.device).repeat_interleave(num_priors)
        # Flat positions of each row entry's v and each column entry's u: a 1-D gather per iteration.
        row_v = image_of_row[:, None] * num_priors + self.row_prior  # [B x G, K]
        column_u = image_of_column[:, None] * (num_gt + 1) + self.column_gt  # [B x N, Kc]

        def row_terms() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """M of the GT rows' pairs [B x G, K], of the wide rows [R, N] and of the background row [B, N]."""
            u_gt = u[:, :num_gt].reshape(-1, 1)
            gts = (self.row_neg_cost + u_gt).add_(_take(v, row_v)).div_(eps)
            wide = (self.wide_neg_cost + u_gt[self.wide_rows]).add_(v[image_of_row[self.wide_rows]]).div_(eps)
            return gts, wide, (neg_bg + u[:, num_gt:]).add_(v).div_(eps)

        def per_row(gts: torch.Tensor, wide: torch.Tensor, reduce) -> torch.Tensor:
            """``reduce`` (over dim 1) of each GT row: [B, G]."""
            result = reduce(gts)
            result[self.wide_rows] = reduce(wide)
            return result.view(batch, num_gt)

        def column_terms() -> torch.Tensor:
            """M of each prior's candidate GTs then the background [B x N, Kc + 1]."""
            u_gt = _take(u, column_u)
            gts = self.column_neg_cost + u_gt
            gts = gts.add_(v.reshape(-1, 1))
            bg = (neg_bg + u[:, num_gt:]).add_(v).reshape(-1, 1)
            return torch.cat([gts, bg], dim=1).div_(eps)

        for _ in range(iterations):
            v = eps * (log_demand - _logsumexp_(column_terms(), dim=1).view(batch, num_priors)) + v
            gts, wide, bg = row_terms()
            lse = per_row(gts, wide, lambda m: _logsumexp_(m, dim=1))
            u_gt = eps * (log_supply[:, :num_gt] - lse) + u[:, :num_gt]
            u_bg = eps * (log_supply[:, num_gt:] - _logsumexp_(bg, dim=1)[:, None]) + u[:, num_gt:]
            u = torch.cat([torch.where(gt_mask, u_gt, u[:, :num_gt]), u_bg], dim=1)

        gts, wide, bg = row_terms()
        bg_plan = _exp_(bg)
        gt_max = per_row(_exp_(gts), _exp_(wide), lambda plan: plan.amax(dim=1)).view(-1)  # 0 off the pairs
        bg_scaled = (bg_plan / bg_plan.amax(dim=1, keepdim=True)).reshape(-1)  # [B x N]
        # Each prior's candidate GTs' scaled plan, in GT order; padding below any value.
        row_of_entry = image_of_column[:, None] * num_gt + self.column_gt
        slot = self.column_neg_cost > float("-inf")
        # M of each (candidate GT, prior) as the rows computed it (the same operations in the same order)
        u_gt = _take(u, column_u)
        m = (self.column_neg_cost + u_gt).add_(v.reshape(-1, 1)).div_(eps)
        entry_plan = torch.where(slot, _exp_(m) / gt_max[row_of_entry], -1.0)
        best, best_slot = entry_plan.max(dim=1)  # first maximum: the lowest GT index
        best_gt = self.column_gt.gather(1, best_slot[:, None]).squeeze(1)
        # A prior's non-candidate GTs have a plan of exactly 0: where no candidate is above 0, the
        # dense argmax meets the first valid GT's 0 first.
        first_valid = gt_mask.int().argmax(dim=1)[image_of_column]
        any_valid = gt_mask.any(dim=1)[image_of_column]
        at_zero = best <= 0
        best = torch.where(at_zero, torch.where(any_valid, 0.0, -1.0), best)
        best_gt = torch.where(at_zero, first_valid, best_gt)
        matched = torch.where(best >= bg_scaled, best_gt, BACKGROUND)
        return matched.view(batch, num_priors)
