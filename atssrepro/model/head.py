"""The detection head shared across P3-P7: a classification tower and a regression tower.

With the defaults it is the official ATSS head; its switches remove, one at a time, the FCOS
improvements that Table 1 of the paper adds to RetinaNet (#A=1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from atssrepro.config import HeadConfig
from atssrepro.model.dcn import ModulatedDeformConv2d


def _tower(in_channels: int, config: HeadConfig) -> nn.Sequential:
    """``config.convs`` x (3x3 conv -> [GroupNorm(32)] -> ReLU); the last conv deformable if ``config.dcn``."""
    layers: list[nn.Module] = []
    for i in range(config.convs):
        channels_in = in_channels if i == 0 else config.channels
        last = i == config.convs - 1
        conv_type = ModulatedDeformConv2d if config.dcn and last else nn.Conv2d
        layers.append(conv_type(channels_in, config.channels, 3, padding=1))
        if config.group_norm:
            layers.append(nn.GroupNorm(32, config.channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _flatten(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """[B, A * K, H, W] -> [B, H * W * A, K], the anchor order of ``grid_anchors``."""
    b, _, h, w = x.shape
    return x.view(b, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, per_anchor)


class DetectionHead(nn.Module):
    """Towers, then 3x3 predictors for classes, box regression and (optionally) centerness.

    Centerness sits on the regression tower. With ``learnable_scales`` each level multiplies its
    regression by a learnable scalar (initialised to 1). With ``point_regression`` the output is
    made non-negative by a ReLU and its bias starts at ``config.point_bias_init``: 4 strides per
    side (the 8S box) in the official POINT head, 0 in the FCOS module.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_anchors: int,
        config: HeadConfig,
        point_regression: bool = False,
        num_levels: int = 5,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.point_regression = point_regression
        self.cls_tower = _tower(in_channels, config)
        self.reg_tower = _tower(in_channels, config)
        self.cls_logits = nn.Conv2d(config.channels, num_anchors * num_classes, 3, padding=1)
        self.box_regression = nn.Conv2d(config.channels, num_anchors * 4, 3, padding=1)
        self.centerness = nn.Conv2d(config.channels, num_anchors, 3, padding=1) if config.centerness else None
        self.scales = nn.Parameter(torch.ones(num_levels)) if config.learnable_scales else None

        # As the official head: every nn.Conv2d, a deformable conv's offset conv included, gets
        # normal(0.01); the deformable conv's own weight keeps its DFConv2d initialisation.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        # Focal-loss prior: every anchor starts as background with probability 1 - prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        if point_regression:
            nn.init.constant_(self.box_regression.bias, config.point_bias_init)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """
        Args:
            features: P3..P7, each [B, in_channels, H_l, W_l].

        Returns:
            cls_logits: [B, N, num_classes], N = sum over levels of H_l * W_l * A.
            box_regression: [B, N, 4], deltas or stride-normalised distances.
            centerness: [B, N] logits, or None without the centerness branch.
        """
        cls_logits, box_regression, centerness = [], [], []
        for level, feature in enumerate(features):
            cls_feature = self.cls_tower(feature)
            reg_feature = self.reg_tower(feature)
            regression = self.box_regression(reg_feature)
            if self.scales is not None:
                regression = regression * self.scales[level]
            if self.point_regression:
                regression = torch.relu(regression)
            cls_logits.append(_flatten(self.cls_logits(cls_feature), self.num_classes))
            box_regression.append(_flatten(regression, 4))
            if self.centerness is not None:
                centerness.append(_flatten(self.centerness(reg_feature), 1).squeeze(-1))
        return (
            torch.cat(cls_logits, 1),
            torch.cat(box_regression, 1),
            torch.cat(centerness, 1) if centerness else None,
        )
