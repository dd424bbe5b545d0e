"""How regression outputs encode boxes: anchor-box deltas (RetinaNet) or point distances (FCOS).

Both coders take the anchors and the stride of each anchor's level, so the detector can hold
either one; :class:`DeltaCoder` ignores the strides.
"""

from __future__ import annotations

import math

import torch

from atssrepro.model.anchors import box_centres

DELTA_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
DWH_CLAMP = math.log(1000.0 / 16)
"""Upper bound on predicted log-scale deltas, so that exp() cannot overflow."""


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


class DeltaCoder:
    """(dx, dy, dw, dh) from the anchor box to the target, scaled by (10, 10, 5, 5)."""

    def encode(self, anchors: torch.Tensor, strides: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            anchors, boxes: [..., 4] xyxy, broadcastable. strides: [...] (unused).

        Returns:
            [..., 4] deltas.
        """
        ax, ay, aw, ah = _centre_size(anchors)
        bx, by, bw, bh = _centre_size(boxes)
        wx, wy, ww, wh = DELTA_WEIGHTS
        return torch.stack(
            [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=-1
        )

    def decode(self, anchors: torch.Tensor, strides: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`, with dw and dh clamped at log(1000 / 16). Returns [..., 4] xyxy."""
        ax, ay, aw, ah = _centre_size(anchors.to(deltas.dtype))
        wx, wy, ww, wh = DELTA_WEIGHTS
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=DWH_CLAMP)
        dh = (deltas[..., 3] / wh).clamp(max=DWH_CLAMP)
        cx, cy = ax + dx * aw, ay + dy * ah
        w, h = aw * torch.exp(dw), ah * torch.exp(dh)
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


class PointCoder:
    """Distances (l, t, r, b) from the anchor's centre to the box sides, divided by the stride.

    The official POINT regression divides by the anchor size and multiplies by 8 (= 8S / S), the
    same thing for the 8S anchors it allows.
    """

    def encode(self, anchors: torch.Tensor, strides: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """
        Args:
            anchors, boxes: [..., 4] xyxy, broadcastable. strides: [...].

        Returns:
            [..., 4] (l, t, r, b) / stride.
        """
        centres = box_centres(anchors)
        ltrb = torch.cat([centres - boxes[..., :2], boxes[..., 2:] - centres], dim=-1)
        return ltrb / strides[..., None]

    def decode(self, anchors: torch.Tensor, strides: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`. Returns [..., 4] xyxy."""
        centres = box_centres(anchors.to(deltas.dtype))
        ltrb = deltas * strides[..., None].to(deltas.dtype)
        return torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], dim=-1)


BoxCoder = DeltaCoder | PointCoder
