"""Anchor-relative box deltas with the RetinaNet weights (10, 10, 5, 5)."""

from __future__ import annotations

import math

import torch

WEIGHTS = (10.0, 10.0, 5.0, 5.0)
DWH_CLAMP = math.log(1000.0 / 16)
"""Upper bound on predicted log-scale deltas, so that exp() cannot overflow."""


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Deltas that turn ``anchors`` into ``boxes``.

    Args:
        anchors, boxes: [..., 4] xyxy, broadcastable.

    Returns:
        [..., 4] (dx, dy, dw, dh) scaled by WEIGHTS.
    """
    ax, ay, aw, ah = _centre_size(anchors)
    bx, by, bw, bh = _centre_size(boxes)
    wx, wy, ww, wh = WEIGHTS
    return torch.stack(
        [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=-1
    )


def decode(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode`, with dw and dh clamped at log(1000 / 16).

    Args:
        anchors: [..., 4] xyxy.
        deltas: [..., 4], broadcastable with ``anchors``.

    Returns:
        [..., 4] xyxy boxes, in the dtype of ``deltas``.
    """
    ax, ay, aw, ah = _centre_size(anchors.to(deltas.dtype))
    wx, wy, ww, wh = WEIGHTS
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=DWH_CLAMP)
    dh = (deltas[..., 3] / wh).clamp(max=DWH_CLAMP)
    cx, cy = ax + dx * aw, ay + dy * ah
    w, h = aw * torch.exp(dw), ah * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
