"""The one-stage detector: backbone + FPN, head, anchors, assigner, losses, post-processing."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from atssrepro.config import AssignConfig, ModelConfig
from atssrepro.model import assign
from atssrepro.model.anchors import anchor_strides, anchors_per_location, grid_anchors
from atssrepro.model.assigners.common import AssignInputs, Assignment
from atssrepro.model.assigners.dispatch import predicted_assignment, strategy_at, uses_predictions
from atssrepro.model.backbone import ResNetFPN
from atssrepro.model.box_coder import DeltaCoder, PointCoder
from atssrepro.model.head import DetectionHead
from atssrepro.model.losses import LossTerms, combine_losses, loss_terms
from atssrepro.model.postprocess import Detections, postprocess

# torchvision's ImageNet statistics, in 0-255 RGB, matching its pretrained ResNets.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# The official models' (Detectron's Caffe weights): BGR 0-255 minus this mean, std 1.
MSRA_PIXEL_MEAN_BGR = (102.9801, 115.9465, 122.7717)


class HeadOutputs(NamedTuple):
    """The head's raw outputs on a padded batch and the priors they belong to.

    ``cls_logits`` [B, N, C], ``box_regression`` [B, N, 4], ``centerness`` [B, N] logits or None;
    ``anchors`` [N, 4] xyxy, ``strides`` [N], ``num_per_level`` the anchors of each level (P3 first).
    """

    cls_logits: torch.Tensor
    box_regression: torch.Tensor
    centerness: torch.Tensor | None
    anchors: torch.Tensor
    strides: torch.Tensor
    num_per_level: list[int]


class OneStageDetector(nn.Module):
    """The one-stage detector of every experiment in the paper, its variants set by ``ModelConfig``.

    The defaults make the paper's main model, RetinaNet (#A=1) with the FCOS improvements and ATSS
    assignment. ``forward`` returns the loss dict when targets are given, else the detections.
    """

    def __init__(self, config: ModelConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.backbone = ResNetFPN(config.backbone, config.fpn_channels, config.p6_from)
        self.anchors_per_location = anchors_per_location(config.anchors)
        point = config.regression == "point"
        self.coder = PointCoder() if point else DeltaCoder()
        self.head = DetectionHead(
            config.fpn_channels, num_classes, self.anchors_per_location, config.head, point_regression=point
        )
        # The backbone's input: channels in this order from the RGB images, minus mean, over std.
        msra = config.backbone.style == "msra"
        self.channels = [2, 1, 0] if msra else [0, 1, 2]
        mean, std = (MSRA_PIXEL_MEAN_BGR, (1.0, 1.0, 1.0)) if msra else (PIXEL_MEAN, PIXEL_STD)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """uint8 RGB [B, 3, H, W] -> float [B, 3, H, W] in the backbone's channel order and
        normalisation, with the padding zero after normalisation."""
        x = (images[:, self.channels].float() - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        rows = torch.arange(h, device=x.device)[None, :, None] < image_sizes[:, 0, None, None]
        cols = torch.arange(w, device=x.device)[None, None, :] < image_sizes[:, 1, None, None]
        return x * (rows & cols)[:, None].to(x.dtype)

    def head_outputs(self, images: torch.Tensor, image_sizes: torch.Tensor) -> HeadOutputs:
        """Backbone, head and the anchors of the padded input's feature maps (arguments as :meth:`forward`)."""
        features = self.backbone(self.normalize(images, image_sizes))
        cls_logits, box_regression, centerness = self.head(features)
        a = self.config.anchors
        anchors, num_per_level = grid_anchors(
            [f.shape[-2:] for f in features], a.scale, a.aspect_ratios, a.scales_per_octave, images.device
        )
        strides = anchor_strides(num_per_level, images.device)
        return HeadOutputs(cls_logits, box_regression, centerness, anchors, strides, num_per_level)

    @torch.no_grad()
    def assignment(
        self,
        outputs: HeadOutputs,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_mask: torch.Tensor,
        iteration: int | None = None,
        config: AssignConfig | None = None,
    ) -> Assignment:
        """The positives of a padded batch under ``config`` (default: the model's ``assign``).

        A static strategy reads the anchors and boxes only. A prediction-aware one also reads the current
        predictions, detached: the class logits and the boxes decoded to image coordinates. ``iteration``
        (0-based, None: past any warm-up) decides TAL's warm-up (:func:`strategy_at`).

        Args:
            outputs: :meth:`head_outputs` of the batch. gt_boxes: [B, G, 4] xyxy; gt_labels: [B, G] int64;
                gt_mask: [B, G] bool.

        Returns:
            :class:`Assignment`: ``matched`` [B, N] (GT index, BACKGROUND or IGNORE), ``quality`` [B, N] for TAL.
        """
        config = self.config.assign if config is None else config
        strategy = strategy_at(config, iteration)
        if strategy == "atss" and config.strategy == "tal":  # TAL's warm-up: ATSS with model.assign.topk
            return Assignment(
                assign.atss(
                    outputs.anchors, outputs.num_per_level, self.anchors_per_location, gt_boxes, gt_mask, config.topk
                )
            )
        if not uses_predictions(strategy):
            per_location = self.anchors_per_location
            return Assignment(
                assign.assign(config, outputs.anchors, outputs.num_per_level, per_location, gt_boxes, gt_mask)
            )
        pred_boxes = self.coder.decode(outputs.anchors, outputs.strides, outputs.box_regression.detach())
        inputs = AssignInputs(
            priors=outputs.anchors,
            strides=outputs.strides,
            num_per_level=tuple(outputs.num_per_level),
            cls_logits=outputs.cls_logits.detach(),
            pred_boxes=pred_boxes,
            gt_boxes=gt_boxes,
            gt_labels=gt_labels,
            gt_mask=gt_mask,
        )
        return predicted_assignment(config, self.config.loss, inputs)

    def loss_terms(
        self,
        images: torch.Tensor,
        image_sizes: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_mask: torch.Tensor,
        iteration: int | None = None,
    ) -> LossTerms:
        """The un-normalised losses of one padding group (arguments as :meth:`forward`)."""
        outputs = self.head_outputs(images, image_sizes)
        assignment = self.assignment(outputs, gt_boxes, gt_labels, gt_mask, iteration)
        # TAL's soft targets (its section is at its defaults under any other strategy); none in its warm-up.
        quality = assignment.quality if self.config.assign.tal.soft_targets else None
        return loss_terms(
            outputs.cls_logits,
            outputs.box_regression,
            outputs.centerness,
            outputs.anchors,
            outputs.strides,
            assignment.matched,
            gt_boxes,
            gt_labels,
            self.coder,
            self.config.loss,
            quality,
        )

    def forward(
        self,
        images: torch.Tensor,
        image_sizes: torch.Tensor,
        gt_boxes: torch.Tensor | None = None,
        gt_labels: torch.Tensor | None = None,
        gt_mask: torch.Tensor | None = None,
        iteration: int | None = None,
    ) -> dict[str, torch.Tensor] | list[Detections]:
        """
        Args:
            images: [B, 3, H, W] uint8 RGB, padded to multiples of 32.
            image_sizes: [B, 2] int64 (h, w) before padding.
            gt_boxes: [B, G, 4] xyxy; gt_labels: [B, G] int64; gt_mask: [B, G] bool. Training only.
            iteration: the training iteration (0-based), for TAL's warm-up; None: past any warm-up.

        Returns:
            Training: ``{"cls", "reg"[, "centerness"]}`` scalar losses of the batch as one padding
            group. Inference: a :class:`Detections` per image, in the coordinates of ``images``.
        """
        if gt_boxes is not None:
            terms = self.loss_terms(images, image_sizes, gt_boxes, gt_labels, gt_mask, iteration)
            return combine_losses([terms], self.config.loss)
        outputs = self.head_outputs(images, image_sizes)
        return postprocess(
            outputs.cls_logits,
            outputs.box_regression,
            outputs.centerness,
            outputs.anchors,
            outputs.strides,
            outputs.num_per_level,
            image_sizes,
            self.coder,
            self.config.inference,
        )
