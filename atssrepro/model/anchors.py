"""Anchors tiled over the P3-P7 feature maps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from atssrepro.config import AnchorConfig

STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128)
"""Total stride of P3..P7."""


def anchors_per_location(config: AnchorConfig) -> int:
    """A, the anchors at each location: every octave scale of every aspect ratio."""
    return len(config.aspect_ratios) * config.scales_per_octave


def cell_anchors(stride: int, scale: float, aspect_ratios: Sequence[float], scales_per_octave: int) -> torch.Tensor:
    """The A anchors of one location, centred on the origin, as the official generator makes them.

    For each ratio (height / width) the official ``_ratio_enum`` first reshapes the stride-sized
    base box at constant area and rounds it to whole pixels, ``w0 = round(sqrt(S^2 / ratio))`` and
    ``h0 = round(w0 * ratio)`` (round half to even, as numpy), then ``_scale_enum`` multiplies both
    by ``scale * 2^(i / scales_per_octave)``. Square anchors and ratios 0.25 and 4 are exact; ratios
    0.5 and 2 are not: the 8S P3 anchor of ratio 0.5 is 88 x 48, not 90.5 x 45.3. The order is
    ratio-major (all octave scales of the first ratio, then the next ratio), the official order.

    Returns:
        [A, 4] float32 xyxy, A = len(aspect_ratios) * scales_per_octave.
    """
    anchors = []
    for ratio in aspect_ratios:
        base_w = round(math.sqrt(stride * stride / ratio))
        base_h = round(base_w * ratio)
        for octave in range(scales_per_octave):
            factor = scale * 2.0 ** (octave / scales_per_octave)
            w, h = base_w * factor, base_h * factor
            anchors.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    scale: float,
    aspect_ratios: Sequence[float],
    scales_per_octave: int,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Anchors of every level, concatenated in level order.

    Location (i, j) of a level with stride S is centred at ((j + 0.5) S, (i + 0.5) S), the
    official convention, which puts anchor centres on FCOS's points. Within a level the order is
    row-major over locations, then the A anchors of a location; this matches the head's
    ``[B, A * C, H, W] -> [B, H * W * A, C]`` flattening.

    Args:
        feature_sizes: (H, W) of P3..P7.

    Returns:
        anchors: [N, 4] float32 xyxy, N = sum over levels of H * W * A.
        num_per_level: the N of each level.
    """
    all_anchors, num_per_level = [], []
    for (h, w), stride in zip(feature_sizes, STRIDES):
        base = cell_anchors(stride, scale, aspect_ratios, scales_per_octave).to(device)
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        level = (centres + base[None]).reshape(-1, 4)
        all_anchors.append(level)
        num_per_level.append(level.shape[0])
    return torch.cat(all_anchors), num_per_level


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(H, W) of P3..P7 for a padded input of ``height`` x ``width`` (multiples of 32).

    P3-P5 divide the input by their stride; P6 and P7 come from stride-2 3x3 convs with padding
    1, which round up.
    """
    sizes = [(height // s, width // s) for s in STRIDES[:3]]
    for _ in STRIDES[3:]:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def anchor_strides(num_per_level: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """[N] float32: the stride of the level each anchor belongs to."""
    counts = torch.tensor(list(num_per_level), device=device)
    return torch.tensor(STRIDES[: len(counts)], dtype=torch.float32, device=device).repeat_interleave(counts)


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] xyxy -> [..., 2] (cx, cy)."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2
