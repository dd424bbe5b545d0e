"""From head outputs to final detections, following the official ATSSPostProcessor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from atssrepro.config import InferenceConfig
from atssrepro.model.box_coder import BoxCoder


@dataclass
class Detections:
    """The detections of one image, in the pixels of the network's input image."""

    boxes: torch.Tensor  # [D, 4] float32 xyxy
    scores: torch.Tensor  # [D] float32, sqrt(cls x centerness), or cls without centerness
    labels: torch.Tensor  # [D] int64 contiguous class index


def postprocess(
    cls_logits: torch.Tensor,
    box_regression: torch.Tensor,
    centerness: torch.Tensor | None,
    anchors: torch.Tensor,
    strides: torch.Tensor,
    num_per_level: Sequence[int],
    image_sizes: torch.Tensor,
    coder: BoxCoder,
    config: InferenceConfig,
) -> list[Detections]:
    """Threshold, per-level top-k, decode, class-wise NMS and the per-image cap.

    1. A (anchor, class) pair is a candidate when sigmoid(cls) > ``score_threshold``.
    2. Per level and image, keep the ``pre_nms_topk`` candidates ranked by cls x centerness.
    3. Decode the boxes, clip them to the image, score = sqrt(cls x centerness).
    Without a centerness branch, ranking and score are cls alone (RetinaNet).
    4. NMS per image and class at ``nms_iou``; keep the best ``detections_per_image``.

    Args:
        cls_logits: [B, N, C]. box_regression: [B, N, 4]. centerness: [B, N] logits or None.
        anchors: [N, 4]; strides: [N]; num_per_level: anchors per level, summing to N.
        image_sizes: [B, 2] (h, w) of each image before padding.

    Returns:
        One :class:`Detections` per image.
    """
    batch, _, num_classes = cls_logits.shape
    probs = torch.sigmoid(cls_logits.float())
    ctr = torch.sigmoid(centerness.float()) if centerness is not None else torch.ones_like(probs[..., 0])

    anchor_idx, class_idx, cls_prob, ctr_prob = [], [], [], []
    start = 0
    for count in num_per_level:
        level_probs = probs[:, start : start + count]  # [B, n, C]
        level_ctr = ctr[:, start : start + count, None]
        ranking = torch.where(level_probs > config.score_threshold, level_probs * level_ctr, -1.0).flatten(1)
        k = min(config.pre_nms_topk, ranking.shape[1])
        _, flat = ranking.topk(k, dim=1)  # [B, k] over (anchor, class) pairs
        anchors_l, classes_l = flat // num_classes, flat % num_classes
        cls_prob.append(level_probs.flatten(1).gather(1, flat))
        ctr_prob.append(level_ctr[..., 0].gather(1, anchors_l))
        anchor_idx.append(anchors_l + start)
        class_idx.append(classes_l)
        start += count
    anchor_idx, class_idx = torch.cat(anchor_idx, 1), torch.cat(class_idx, 1)  # [B, K]
    cls_prob, ctr_prob = torch.cat(cls_prob, 1), torch.cat(ctr_prob, 1)

    keep = cls_prob > config.score_threshold  # top-k may have had to take non-candidates
    image_idx = torch.arange(batch, device=cls_logits.device)[:, None].expand_as(anchor_idx)[keep]
    anchor_idx, class_idx = anchor_idx[keep], class_idx[keep]
    scores = torch.sqrt(cls_prob[keep] * ctr_prob[keep]) if centerness is not None else cls_prob[keep]
    deltas = box_regression[image_idx, anchor_idx].float()
    boxes = coder.decode(anchors[anchor_idx], strides[anchor_idx], deltas)
    sizes = image_sizes.to(boxes)[image_idx]  # [D, 2] (h, w)
    boxes = torch.stack(
        [
            boxes[:, 0].clamp(min=0).minimum(sizes[:, 1]),
            boxes[:, 1].clamp(min=0).minimum(sizes[:, 0]),
            boxes[:, 2].clamp(min=0).minimum(sizes[:, 1]),
            boxes[:, 3].clamp(min=0).minimum(sizes[:, 0]),
        ],
        dim=1,
    )

    # One NMS call for the whole batch: (image, class) pairs never suppress each other.
    kept = batched_nms(boxes, scores, image_idx * num_classes + class_idx, config.nms_iou)  # by score
    results = []
    for b in range(batch):
        mine = kept[image_idx[kept] == b][: config.detections_per_image]
        results.append(Detections(boxes=boxes[mine], scores=scores[mine], labels=class_idx[mine]))
    return results
