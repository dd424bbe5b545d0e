"""Dynamic-k matching, shared by SimOTA and DSL (mmdetection 3.3's ``dynamic_k_matching``)."""

from __future__ import annotations

import torch

from atssrepro.model.assign import BACKGROUND


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
    lowest = cost.topk(min(topk, num_priors), dim=-1, largest=False)  # [B, G, K], lowest cost first
    # Among equal costs the lowest prior index first: the reference's choice when it takes one prior
    # (its top-1 keeps the first minimum), and one rule on every device. Equal costs are common
    # among penalised candidates: 1e5 + cost in float32 has steps of 1/128.
    by_index, permutation = lowest.indices.sort(dim=-1)
    order = by_index.gather(-1, lowest.values.gather(-1, permutation).argsort(dim=-1, stable=True))
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
