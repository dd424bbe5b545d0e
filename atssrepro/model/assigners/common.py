"""What the prediction-aware assigners read and return, and the pieces they share.

Every assigner of this package takes one :class:`AssignInputs` (a padded batch; one image is a batch
of 1) and returns an :class:`Assignment`. Tensors follow the detector's layout: priors in level
order, P3 first; each GT's quantities over the priors are laid out ``[B, G, N]`` so that per-GT
top-k runs along the contiguous last dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from atssrepro.model.anchors import box_centres
from atssrepro.model.assign import BACKGROUND

IOU_EPS = 1e-6
"""mmdetection's ``bbox_overlaps`` floor on the union."""


@dataclass(frozen=True)
class AssignInputs:
    """One padded batch as a prediction-aware assigner sees it.

    Attributes:
        priors: [N, 4] float xyxy anchors of all levels, P3 first. A prior's centre is its
            FCOS point; the rules that need points use it.
        strides: [N] float, the stride of each prior's level.
        num_per_level: priors on each level; they sum to N.
        cls_logits: [B, N, C] float, the detached class logits (not probabilities).
        pred_boxes: [B, N, 4] float, the detached predicted boxes decoded to xyxy image coordinates.
        gt_boxes: [B, G, 4] float xyxy, padded; G may be 0.
        gt_labels: [B, G] int64 class indices in [0, C) (any value where ``gt_mask`` is False).
        gt_mask: [B, G] bool, True on real boxes; an image may have none.
    """

    priors: torch.Tensor
    strides: torch.Tensor
    num_per_level: tuple[int, ...]
    cls_logits: torch.Tensor
    pred_boxes: torch.Tensor
    gt_boxes: torch.Tensor
    gt_labels: torch.Tensor
    gt_mask: torch.Tensor

    def __post_init__(self) -> None:
        # Shape checks only: nothing here reads tensor values, so nothing waits for the GPU.
        n = self.priors.shape[0]
        b, g = self.gt_mask.shape
        expected = {
            "priors": (n, 4),
            "strides": (n,),
            "pred_boxes": (b, n, 4),
            "gt_boxes": (b, g, 4),
            "gt_labels": (b, g),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        if self.cls_logits.dim() != 3 or tuple(self.cls_logits.shape[:2]) != (b, n):
            raise ValueError(f"cls_logits has shape {tuple(self.cls_logits.shape)}, expected ({b}, {n}, C)")
        if sum(self.num_per_level) != n:
            raise ValueError(f"num_per_level {tuple(self.num_per_level)} does not sum to the {n} priors")

    @classmethod
    def single(
        cls,
        priors: torch.Tensor,
        strides: torch.Tensor,
        num_per_level: Sequence[int],
        cls_logits: torch.Tensor,
        pred_boxes: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
    ) -> AssignInputs:
        """One image as a batch of 1: cls_logits [N, C], pred_boxes [N, 4], gt_boxes [G, 4], gt_labels [G]."""
        return cls(
            priors=priors,
            strides=strides,
            num_per_level=tuple(num_per_level),
            cls_logits=cls_logits[None],
            pred_boxes=pred_boxes[None],
            gt_boxes=gt_boxes.reshape(1, -1, 4),
            gt_labels=gt_labels.reshape(1, -1),
            gt_mask=torch.ones(1, gt_boxes.reshape(-1, 4).shape[0], dtype=torch.bool, device=gt_boxes.device),
        )

    @property
    def centres(self) -> torch.Tensor:
        """[N, 2] (x, y) of every prior."""
        return box_centres(self.priors.float())

    def gt_class_columns(self, values: torch.Tensor) -> torch.Tensor:
        """Each GT's class column of a per-prior, per-class tensor: [B, N, C] -> [B, G, N].

        This is how the rules read a prior's score for a GT's class without a [B, N, G, C] tensor.
        """
        labels = torch.where(self.gt_mask, self.gt_labels, 0)
        b, n = values.shape[:2]
        gathered = values.gather(2, labels[:, None, :].expand(b, n, labels.shape[1]))  # [B, N, G]
        return gathered.transpose(1, 2).contiguous()


@dataclass(frozen=True)
class Assignment:
    """An assigner's result.

    Attributes:
        matched: [B, N] int64: the GT index in 0..G-1, BACKGROUND or IGNORE.
        quality: [B, N] float or None: a per-prior soft target where the rule defines one (TAL's
            normalised alignment metric), 0 on non-positives.
    """

    matched: torch.Tensor
    quality: torch.Tensor | None = None


def all_background(inputs: AssignInputs) -> Assignment:
    """The result for a batch without GT boxes or priors."""
    b, n = inputs.gt_mask.shape[0], inputs.priors.shape[0]
    return Assignment(torch.full((b, n), BACKGROUND, dtype=torch.long, device=inputs.priors.device))


def pairwise_iou(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """IoU of every box with every GT of its image, as mmdetection's ``bbox_overlaps``.

    The union is floored at 1e-6 (degenerate boxes give 0, not NaN), and the arithmetic is in
    mmdetection's order so that equal inputs give equal values.

    Args:
        boxes: [B, N, 4] xyxy (or [N, 4], shared by the batch).
        gt_boxes: [B, G, 4] xyxy.

    Returns:
        [B, G, N] float.
    """
    boxes = boxes.expand(gt_boxes.shape[0], -1, -1)[:, None]  # [B, 1, N, 4]
    gts = gt_boxes[:, :, None]  # [B, G, 1, 4]
    width = (torch.minimum(boxes[..., 2], gts[..., 2]) - torch.maximum(boxes[..., 0], gts[..., 0])).clamp(min=0)
    height = (torch.minimum(boxes[..., 3], gts[..., 3]) - torch.maximum(boxes[..., 1], gts[..., 1])).clamp(min=0)
    overlap = width * height
    area_boxes = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    area_gts = (gts[..., 2] - gts[..., 0]) * (gts[..., 3] - gts[..., 1])
    union = (area_boxes + area_gts - overlap).clamp(min=IOU_EPS)
    return overlap / union


def inside_margins(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The smallest of the (l, t, r, b) distances from each point to each box's sides.

    Args:
        points: [N, 2] (x, y).
        boxes: [B, G, 4] xyxy.

    Returns:
        [B, G, N]: > 0 where the point lies strictly inside the box.
    """
    x, y = points[:, 0], points[:, 1]
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    return torch.minimum(torch.minimum(x - x1, y - y1), torch.minimum(x2 - x, y2 - y))
