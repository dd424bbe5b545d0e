"""ResNet + FPN producing P3-P7, built from torchvision's parts."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from atssrepro.config import BackboneConfig
from atssrepro.errors import UserError

# Stages from the last to the first: trainable_stages = k leaves the first 5 - k frozen.
_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")


def load_weights(resnet: nn.Module, weights: str) -> None:
    """Load pretrained ImageNet weights into ``resnet`` from a file or a torchvision weights name."""
    path = Path(weights).expanduser()
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.is_file():
            raise UserError(f"model.backbone.weights: file {path} not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or non-torch file
            raise UserError(f"model.backbone.weights: {path} is not a readable torch state dict ({e})") from None
    else:
        try:
            enum = torchvision.models.get_weight(weights)
        except (ValueError, KeyError):
            raise UserError(
                f"model.backbone.weights = {weights!r} is neither a file nor a torchvision weights name "
                "such as 'ResNet50_Weights.IMAGENET1K_V1'"
            ) from None
        try:
            state = enum.get_state_dict(progress=False)
        except Exception as e:  # offline: urllib raises URLError and friends
            raise UserError(
                f"could not download {weights} ({type(e).__name__}); on a machine with internet fetch {enum.url}, "
                "copy it here and pass --set model.backbone.weights=/path/to/file.pth"
            ) from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    problem = ""
    try:
        missing, unexpected = resnet.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensors of the wrong shape
        problem = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
    else:
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            problem = f"{len(missing)} missing keys, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}"
    if problem:
        raise UserError(
            f"model.backbone.weights = {weights} does not fit a torchvision {type(resnet).__name__} "
            f"of model.backbone.name ({problem})"
        )


class ResNetFPN(nn.Module):
    """A torchvision ResNet with frozen BatchNorm, and an FPN over C3-C5 with P6, P7 on top.

    P6 is a stride-2 3x3 conv on P5 (``USE_C5: False``) and P7 one on ReLU(P6), the official
    ``LastLevelP6P7``.
    """

    def __init__(self, config: BackboneConfig, out_channels: int) -> None:
        super().__init__()
        resnet = getattr(torchvision.models, config.name)(weights=None, norm_layer=FrozenBatchNorm2d)
        if config.weights:
            load_weights(resnet, config.weights)
        trainable = _STAGES[: config.trainable_stages]
        for name, parameter in resnet.named_parameters():
            parameter.requires_grad_(name.split(".")[0] in trainable)
        c5_channels = resnet.fc.in_features
        self.body = BackboneWithFPN(
            resnet,
            return_layers={"layer2": "c3", "layer3": "c4", "layer4": "c5"},
            in_channels_list=[c5_channels // 4, c5_channels // 2, c5_channels],
            out_channels=out_channels,
            extra_blocks=LastLevelP6P7(out_channels, out_channels),
        )
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """
        Args:
            images: [B, 3, H, W] normalised, H and W multiples of 32.

        Returns:
            P3..P7, level l of shape [B, out_channels, ceil(H / 2^l), ceil(W / 2^l)].
        """
        features: OrderedDict[str, torch.Tensor] = self.body(images)
        return list(features.values())
