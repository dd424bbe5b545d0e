"""The one-stage detector: backbone + FPN, head, anchors, assigner, losses, post-processing."""

from __future__ import annotations

import torch
from torch import nn

from atssrepro.config import ModelConfig
from atssrepro.model import assign
from atssrepro.model.anchors import anchor_strides, anchors_per_location, grid_anchors
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

    def _run(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple:
        """Backbone, head and the anchors of the padded input's feature maps."""
        features = self.backbone(self.normalize(images, image_sizes))
        cls_logits, box_regression, centerness = self.head(features)
        a = self.config.anchors
        anchors, num_per_level = grid_anchors(
            [f.shape[-2:] for f in features], a.scale, a.aspect_ratios, a.scales_per_octave, images.device
        )
        strides = anchor_strides(num_per_level, images.device)
        return cls_logits, box_regression, centerness, anchors, strides, num_per_level

    def loss_terms(
        self,
        images: torch.Tensor,
        image_sizes: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_mask: torch.Tensor,
    ) -> LossTerms:
        """The un-normalised losses of one padding group (arguments as :meth:`forward`)."""
        cls_logits, box_regression, centerness, anchors, strides, num_per_level = self._run(images, image_sizes)
        with torch.no_grad():
            matched = assign.assign(
                self.config.assign, anchors, num_per_level, self.anchors_per_location, gt_boxes, gt_mask
            )
        return loss_terms(
            cls_logits,
            box_regression,
            centerness,
            anchors,
            strides,
            matched,
            gt_boxes,
            gt_labels,
            self.coder,
            self.config.loss,
        )

    def forward(
        self,
        images: torch.Tensor,
        image_sizes: torch.Tensor,
        gt_boxes: torch.Tensor | None = None,
        gt_labels: torch.Tensor | None = None,
        gt_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor] | list[Detections]:
        """
        Args:
            images: [B, 3, H, W] uint8 RGB, padded to multiples of 32.
            image_sizes: [B, 2] int64 (h, w) before padding.
            gt_boxes: [B, G, 4] xyxy; gt_labels: [B, G] int64; gt_mask: [B, G] bool. Training only.

        Returns:
            Training: ``{"cls", "reg"[, "centerness"]}`` scalar losses of the batch as one padding
            group. Inference: a :class:`Detections` per image, in the coordinates of ``images``.
        """
        if gt_boxes is not None:
            terms = self.loss_terms(images, image_sizes, gt_boxes, gt_labels, gt_mask)
            return combine_losses([terms], self.config.loss)
        cls_logits, box_regression, centerness, anchors, strides, num_per_level = self._run(images, image_sizes)
        return postprocess(
            cls_logits,
            box_regression,
            centerness,
            anchors,
            strides,
            num_per_level,
            image_sizes,
            self.coder,
            self.config.inference,
        )
