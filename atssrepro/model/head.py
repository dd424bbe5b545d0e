"""The ATSS head: shared across P3-P7, a classification tower and a regression tower."""

from __future__ import annotations

import math

import torch
from torch import nn


def _tower(channels: int, in_channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1),
            nn.GroupNorm(32, channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _flatten(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """[B, A * K, H, W] -> [B, H * W * A, K], the anchor order of ``grid_anchors``."""
    b, _, h, w = x.shape
    return x.view(b, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, per_anchor)


class ATSSHead(nn.Module):
    """Two towers of ``num_convs`` x (3x3 conv -> GroupNorm(32) -> ReLU), then 3x3 predictors.

    Centerness sits on the regression tower, and each level multiplies its box regression by
    a learnable scalar (initialised to 1), as in the official ATSS head.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_anchors: int,
        channels: int = 256,
        num_convs: int = 4,
        num_levels: int = 5,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_tower = _tower(channels, in_channels, num_convs)
        self.reg_tower = _tower(channels, in_channels, num_convs)
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        self.box_regression = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, num_anchors, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(num_levels))

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        # Focal-loss prior: every anchor starts as background with probability 1 - prior_prob.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            features: P3..P7, each [B, in_channels, H_l, W_l].

        Returns:
            cls_logits: [B, N, num_classes], N = sum over levels of H_l * W_l * A.
            box_regression: [B, N, 4].
            centerness: [B, N] logits.
        """
        cls_logits, box_regression, centerness = [], [], []
        for level, feature in enumerate(features):
            cls_feature = self.cls_tower(feature)
            reg_feature = self.reg_tower(feature)
            cls_logits.append(_flatten(self.cls_logits(cls_feature), self.num_classes))
            box_regression.append(_flatten(self.box_regression(reg_feature) * self.scales[level], 4))
            centerness.append(_flatten(self.centerness(reg_feature), 1).squeeze(-1))
        return torch.cat(cls_logits, 1), torch.cat(box_regression, 1), torch.cat(centerness, 1)
