"""Modulated deformable convolution (DCNv2) on top of ``torchvision.ops.deform_conv2d``."""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import deform_conv2d


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return first, second


class ModulatedDeformConv2d(nn.Module):
    """DCNv2: a conv that samples its input at learned offsets and scales each tap by a learned mask.

    A plain conv ``offset`` on the same input predicts, per output location, 2 x kh x kw offsets
    (y, x pairs, torchvision's layout) and kh x kw mask logits; the mask is their sigmoid. With
    zero offsets and mask logits, every tap samples its regular grid position with mask 0.5 and
    the layer computes 0.5 x (a plain conv without bias) + bias.

    Initialisation follows maskrcnn-benchmark's ``DFConv2d``, which the official models use: the
    offset conv kaiming-uniform (a=1) with zero bias, the main weight U(+-1/sqrt(in x kh x kw))
    with zero bias. ``weight`` has ``nn.Conv2d``'s shape, so a pretrained conv's weight can be
    copied in (see :meth:`from_conv`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels {in_channels} and out_channels {out_channels} must divide by {groups} groups"
            )
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.offset = nn.Conv2d(
            in_channels,
            3 * taps,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        bound = 1 / math.sqrt(in_channels * taps)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.kaiming_uniform_(self.offset.weight, a=1)
        nn.init.zeros_(self.offset.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> ModulatedDeformConv2d:
        """A DCN with ``conv``'s geometry, groups and (copied) weight and bias."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only explicit zero padding converts to a deformable conv, not {conv}")
        dcn = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            dcn.weight.copy_(conv.weight)
            if conv.bias is not None and dcn.bias is not None:
                dcn.bias.copy_(conv.bias)
        return dcn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: [B, in_channels, H, W].

        Returns:
            [B, out_channels, H', W'], H' and W' as for ``nn.Conv2d`` with the same geometry.
        """
        taps = self.kernel_size[0] * self.kernel_size[1]
        # Offsets need fp32 precision, and deform_conv2d has no CPU autocast kernel: run in fp32
        # and hand back the input's dtype, as torchvision's CUDA autocast kernel does.
        with torch.autocast(x.device.type, enabled=False):
            x32 = x.float()
            offset_and_mask = self.offset(x32)
            offset = offset_and_mask[:, : 2 * taps]
            mask = offset_and_mask[:, 2 * taps :].sigmoid()
            out = deform_conv2d(
                x32,
                offset,
                self.weight.float(),
                None if self.bias is None else self.bias.float(),
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                mask=mask,
            )
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        in_channels = self.weight.shape[1] * self.groups
        return (
            f"{in_channels}, {self.weight.shape[0]}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )


def replace_with_dcn(stage: nn.Module) -> None:
    """Turn the 3x3 ``conv2`` of every torchvision ``Bottleneck`` in ``stage`` into a
    :class:`ModulatedDeformConv2d` that keeps its weight, stride, dilation and groups.

    Convert after loading pretrained weights: the state-dict key of the weight
    (``...conv2.weight``) is unchanged, and the new ``...conv2.offset.*`` parameters are not in
    ImageNet checkpoints.
    """
    for block in stage.modules():
        if isinstance(block, Bottleneck) and isinstance(block.conv2, nn.Conv2d):
            block.conv2 = ModulatedDeformConv2d.from_conv(block.conv2)
