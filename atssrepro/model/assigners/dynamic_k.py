"""Dynamic-k matching, shared by SimOTA and DSL (mmdetection 3.3's ``dynamic_k_matching``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from atssrepro.model.assign import BACKGROUND
from atssrepro.model.assigners.common import gt_chunks, pairwise_iou


def dynamic_ks(ious: torch.Tensor, valid: torch.Tensor, topk: int) -> torch.Tensor:
    """Each GT's k: max(1, int(sum of its ``topk`` largest IoUs over the valid priors)).

    Args:
        ious: [B, G, N] IoU of each prior's predicted box with each GT.
        valid: [B, N] bool, the priors that take part (the rule's candidates).

    Returns:
        [B, G] int64 in [1, topk].
    """
    top = ious.masked_fill(~valid[:, None, :], 0.0).topk(min(topk, ious.shape[-1]), dim=-1).values
    return top.sum(dim=-1).int().clamp(min=1).long()


def chunked_dynamic_ks(
    pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, valid: torch.Tensor, topk: int
) -> torch.Tensor:
    """:func:`dynamic_ks` of the IoUs of the predicted boxes with the GTs, computed a chunk of GTs at
    a time (:func:`~atssrepro.model.assigners.common.gt_chunks`): the same values without a [B, G, N] table.

    Args:
        pred_boxes: [B, N, 4] float xyxy. gt_boxes: [B, G, 4] float xyxy. valid: [B, N] bool.

    Returns:
        [B, G] int64 in [1, topk].
    """
    batch, num_priors = valid.shape
    chunks = [
        dynamic_ks(pairwise_iou(pred_boxes, gt_boxes[:, chunk]), valid, topk)
        for chunk in gt_chunks(batch, gt_boxes.shape[1], num_priors)
    ]
    return torch.cat(chunks, dim=1) if chunks else torch.zeros(batch, 0, dtype=torch.long, device=valid.device)


def dynamic_k_match(
    cost: torch.Tensor, ious: torch.Tensor, valid: torch.Tensor, gt_mask: torch.Tensor, topk: int
) -> torch.Tensor:
    """Each GT takes its k (:func:`dynamic_ks`) valid priors of lowest cost (the lowest prior index
    first among equal costs); then a prior taken by several GTs goes to the GT of lowest cost among
    *all* GTs of its image (the lowest index on a tie), whether or not that GT took it, as the
    reference does.

    Args:
        cost: [B, G, N] float; any value where a prior is not valid or a GT is padding.
        ious: [B, G, N] float.
        valid: [B, N] bool.
        gt_mask: [B, G] bool.
        topk: the candidate count of :func:`dynamic_ks`; it also bounds k, so one top-k of that
            size serves every GT.

    Returns:
        [B, N] int64: GT index or BACKGROUND.
    """
    batch, num_gt, num_priors = cost.shape
    cost = cost.masked_fill(~valid[:, None, :], float("inf")).masked_fill_(~gt_mask[..., None], float("inf"))
    k = dynamic_ks(ious, valid, topk)  # [B, G]
    order = lowest_first(cost, min(topk, num_priors))  # [B, G, K]
    take = torch.arange(order.shape[-1], device=cost.device) < k[..., None]
    take &= valid.gather(1, order.flatten(1)).view_as(order) & gt_mask[..., None]

    # Over the (image, GT, rank) selections: how many GTs took each prior, and which (if one did).
    flat_prior = (torch.arange(batch, device=cost.device)[:, None, None] * num_priors + order).flatten()
    times_taken = torch.zeros(batch * num_priors, dtype=torch.long, device=cost.device)
    times_taken = times_taken.scatter_add_(0, flat_prior, take.flatten().long()).view(batch, num_priors)
    gt_index = torch.arange(num_gt, device=cost.device)[None, :, None].expand_as(order)
    only_gt = torch.full((batch * num_priors,), -1, dtype=torch.long, device=cost.device)
    only_gt = only_gt.scatter_reduce_(0, flat_prior, torch.where(take, gt_index, -1).flatten(), "amax")
    matched = torch.where(times_taken > 1, cost.argmin(dim=1), only_gt.view(batch, num_priors))
    return torch.where(times_taken > 0, matched, BACKGROUND)


def lowest_first(cost: torch.Tensor, count: int) -> torch.Tensor:
    """The positions of the ``count`` lowest values of each row, lowest first: [..., W] -> [..., count].

    Among equal costs the lowest position first: the reference's choice when it takes one prior (its
    top-1 keeps the first minimum), and one rule on every device. Equal costs are common among
    penalised candidates: 1e5 + cost in float32 has steps of 1/128.
    """
    lowest = cost.topk(count, dim=-1, largest=False)
    by_index, permutation = lowest.indices.sort(dim=-1)
    return by_index.gather(-1, lowest.values.gather(-1, permutation).argsort(dim=-1, stable=True))


PairCost = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(image, GT, prior) indices [E] each -> the cost [E] of those pairs."""


def pairwise_dynamic_k_match(
    pair_cost: PairCost,
    pairs: torch.Tensor,
    floor: float,
    k: torch.Tensor,
    valid: torch.Tensor,
    gt_mask: torch.Tensor,
    topk: int,
) -> torch.Tensor:
    """:func:`dynamic_k_match`, the same result, computing costs only where it needs them.

    Each GT's costs are computed first on its ``pairs`` alone (the rule's likely choices). A GT's
    choice is complete there when its k-th lowest pair cost is below ``floor``, a lower bound of the
    cost of every valid prior outside its pairs: then no other prior comes before its k lowest,
    however ties are broken. For any other GT the cost is computed on every prior (a row of the
    dense cost). A prior taken by several GTs goes to the GT of lowest cost among all GTs of its
    image: that column is computed whole.

    Args:
        pair_cost: the cost of given (image, GT, prior) pairs, the same floats as the dense cost that
            :func:`dynamic_k_match` would read there.
        pairs: [B, G, N] bool, the pairs costed first.
        floor: every valid (GT, prior) pair outside ``pairs`` costs at least this.
        k: [B, G] each GT's k (:func:`dynamic_ks`, :func:`chunked_dynamic_ks`).
        valid, gt_mask, topk: as :func:`dynamic_k_match`.

    Returns:
        [B, N] int64: GT index or BACKGROUND.
    """
    batch, num_gt, num_priors = pairs.shape
    device = pairs.device
    size = min(topk, num_priors)
    k = k.view(-1, 1)  # [B x G, 1]
    b, g, j = (
        pairs.logical_and(valid[:, None, :]).logical_and_(gt_mask[..., None]).nonzero(as_tuple=True)
    )  # by image, GT, prior
    row = b * num_gt + g
    count = torch.bincount(row, minlength=batch * num_gt)
    slot = torch.arange(len(row), device=device) - (count.cumsum(0) - count)[row]
    width = max(int(count.max()) if len(row) else 0, size)
    table = torch.full((batch * num_gt, width), float("inf"), device=device)  # each GT's pair costs by prior
    table[row, slot] = pair_cost(b, g, j)
    prior = torch.zeros(batch * num_gt, width, dtype=torch.long, device=device)
    prior[row, slot] = j
    order = lowest_first(table, size)
    chosen = prior.gather(1, order)  # [B x G, K]
    kth = table.gather(1, order.gather(1, k - 1)).squeeze(1)  # inf where a GT has fewer than k pairs
    wide = (gt_mask.view(-1) & ~(kth < floor)).nonzero().squeeze(1)  # [R]
    if len(wide):
        image, gt = wide // num_gt, wide % num_gt
        every = torch.arange(num_priors, device=device).repeat(len(wide))
        rows = pair_cost(image.repeat_interleave(num_priors), gt.repeat_interleave(num_priors), every)
        rows = rows.view(len(wide), num_priors).masked_fill_(~valid[image], float("inf"))
        chosen[wide] = lowest_first(rows, size)
    image_of_row = torch.arange(batch, device=device).repeat_interleave(num_gt)[:, None]
    take = torch.arange(size, device=device) < k
    take &= valid.view(-1)[image_of_row * num_priors + chosen] & gt_mask.view(-1, 1)

    # Over the (image, GT, rank) selections: how many GTs took each prior, and which (if one did).
    flat_prior = (image_of_row * num_priors + chosen).flatten()
    times_taken = torch.zeros(batch * num_priors, dtype=torch.long, device=device)
    times_taken = times_taken.scatter_add_(0, flat_prior, take.flatten().long())
    gt_of_row = torch.arange(num_gt, device=device).repeat(batch)[:, None].expand_as(chosen)
    matched = torch.full((batch * num_priors,), -1, dtype=torch.long, device=device)
    matched = matched.scatter_reduce_(0, flat_prior, torch.where(take, gt_of_row, -1).flatten(), "amax")
    shared = (times_taken > 1).nonzero().squeeze(1)  # [P]
    if len(shared):
        image, prior_index = shared // num_priors, shared % num_priors
        every = torch.arange(num_gt, device=device).repeat(len(shared))
        columns = pair_cost(image.repeat_interleave(num_gt), every, prior_index.repeat_interleave(num_gt))
        columns = columns.view(len(shared), num_gt).masked_fill_(~gt_mask[image], float("inf"))
        matched[shared] = columns.argmin(dim=1)
    return torch.where(times_taken > 0, matched, BACKGROUND).view(batch, num_priors)
