"""What the prediction-aware assigners read and return, and the pieces they share.

Every assigner of this package takes one :class:`AssignInputs` (a padded batch; one image is a batch
of 1) and returns an :class:`Assignment`. Tensors follow the detector's layout: priors in level
order, P3 first; each GT's quantities over the priors are laid out ``[B, G, N]`` so that per-GT
top-k runs along the contiguous last dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from atssrepro.model.anchors import box_centres
from atssrepro.model.assign import BACKGROUND

IOU_EPS = 1e-6
"""mmdetection's ``bbox_overlaps`` floor on the union."""
CHUNK_ELEMENTS = 2**22
"""About this many (GT, prior) entries (16 MB of floats) per chunk of :func:`gt_chunks`."""


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
        by_class = values.transpose(1, 2).contiguous()  # [B, C, N]: then each GT copies a whole row
        return by_class[torch.arange(len(labels), device=labels.device)[:, None], labels]


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
    # Each coordinate contiguous ([B, 1, N] and [B, G, 1]) so that the [B, G, N] loops vectorise.
    box_sides = tuple(c.contiguous()[:, None] for c in boxes.expand(gt_boxes.shape[0], -1, -1).unbind(-1))
    return _iou(box_sides, tuple(c[..., None] for c in gt_boxes.unbind(-1)))


def paired_iou(boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """IoU of each box with its GT, [E, 4] and [E, 4] -> [E]: the floats of :func:`pairwise_iou` for those pairs."""
    return _iou(tuple(boxes.unbind(-1)), tuple(gt_boxes.unbind(-1)))


def _iou(box: tuple[torch.Tensor, ...], gt: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """mmdetection's ``bbox_overlaps`` on broadcastable sides (x1, y1, x2, y2) of the boxes and the GTs;
    in place on three buffers of the result's shape: on the CPU, fresh large tensors cost more than
    arithmetic."""
    bx1, by1, bx2, by2 = box
    gx1, gy1, gx2, gy2 = gt
    low = torch.maximum(bx1, gx1)
    overlap = torch.minimum(bx2, gx2).sub_(low).clamp_(min=0)
    torch.maximum(by1, gy1, out=low)
    height = torch.minimum(by2, gy2).sub_(low).clamp_(min=0)
    overlap.mul_(height)
    area_boxes = (bx2 - bx1) * (by2 - by1)
    area_gts = (gx2 - gx1) * (gy2 - gy1)
    union = torch.add(area_boxes, area_gts, out=height).sub_(overlap).clamp_(min=IOU_EPS)
    return overlap.div_(union)


def strictly_inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Whether each point lies strictly inside each box: min(l, t, r, b) > 0, as x > x1, y > y1,
    x < x2, y < y2 (the same test exactly: for floats, a - b > 0 if and only if a > b).

    Args:
        points: [N, 2] (x, y).
        boxes: [B, G, 4] xyxy, or [B, G, N, 4]-broadcastable sides.

    Returns:
        [B, G, N] bool.
    """
    x, y = points[:, 0], points[:, 1]
    x1, y1, x2, y2 = (boxes[..., i, None] for i in range(4))
    return (x > x1).logical_and_(y > y1).logical_and_(x < x2).logical_and_(y < y2)


def centre_squares(inputs: AssignInputs, radius: float) -> torch.Tensor:
    """Whether each prior's centre lies strictly inside each GT's centre square, the GT centre +-
    radius x the prior's stride (not clipped to the box), its sides as mmdetection's SimOTA forms
    them: [B, G, N] bool.
    """
    gt_boxes, centres = inputs.gt_boxes.float(), inputs.centres
    side = radius * inputs.strides.float()
    gt_centres = ((gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0).repeat(1, 1, 2)  # [B, G, 4]
    inside, start = [], 0
    for count in (c for c in inputs.num_per_level if c > 0):
        level_side = side[start]  # device arithmetic only: no host tensor reaches the device
        offset = torch.stack([-level_side, -level_side, level_side, level_side])
        inside.append(strictly_inside(centres[start : start + count], gt_centres + offset))
        start += count
    return torch.cat(inside, dim=-1)


def on_valid_priors(
    function: Callable[[torch.Tensor], torch.Tensor], values: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """``function`` of each valid prior's row of ``values``, 0 elsewhere: a per-prior quantity that only the
    candidates' costs read (its other entries reach only costs that the matching sets to +inf).

    Args:
        function: [V, C] -> [V], row by row.
        values: [B, N, C]. valid: [B, N] bool.

    Returns:
        [B, N].
    """
    result = values.new_zeros(valid.shape)
    result[valid] = function(values[valid])
    return result


def gt_chunks(batch: int, num_gt: int, num_priors: int) -> list[slice]:
    """Slices of the GT dimension for tables [B, chunk, N] of about ``CHUNK_ELEMENTS`` entries: on the CPU
    a table over 32 MB is fresh memory on every call, slower to fill than to compute."""
    step = max(1, CHUNK_ELEMENTS // max(1, batch * num_priors))
    return [slice(start, start + step) for start in range(0, num_gt, step)]
