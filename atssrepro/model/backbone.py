"""ResNet / ResNeXt + FPN producing P3-P7, built from torchvision's parts."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import Bottleneck
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from atssrepro.config import BackboneConfig
from atssrepro.errors import UserError
from atssrepro.model import pretrained
from atssrepro.model.dcn import replace_with_dcn
from atssrepro.model.detectron_pickle import official_backbone_state, read_blobs
from atssrepro.model.official import BODY_PREFIX, convert_backbone_state_dict

# Stages from the last to the first: trainable_stages = k leaves the first 5 - k frozen.
_STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")


def weights_name(backbone: str, weights: str) -> str:
    """Resolve ``imagenet`` to the backbone's classic torchvision weights, e.g. ``ResNet50_Weights.IMAGENET1K_V1``."""
    return pretrained.resolve_name(weights, backbone, "torchvision")


def _read_state_dict(path: Path) -> dict:
    """A weights file read with ``weights_only=True``; a truncated, foreign or non-dict file is one line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or non-torch file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"model.backbone.weights: {path} is not a readable torch state dict ({reason})") from None
    if not isinstance(state, dict):
        raise UserError(f"model.backbone.weights: {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_weights(resnet: nn.Module, weights: str) -> None:
    """Load pretrained ImageNet weights into a torchvision ``resnet`` (or ResNeXt) from a file or a
    torchvision weights name such as ``ResNeXt101_32X8D_Weights.IMAGENET1K_V1``."""
    path = Path(weights).expanduser()
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.is_file():
            raise UserError(f"model.backbone.weights: file {path} not found")
        state = _read_state_dict(path)
    else:
        try:
            enum = torchvision.models.get_weight(weights)
        except (ValueError, KeyError):
            raise UserError(
                f"model.backbone.weights = {weights!r} is neither a file nor a torchvision weights name "
                "such as 'ResNet50_Weights.IMAGENET1K_V1' or 'ResNeXt101_32X8D_Weights.IMAGENET1K_V1'"
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
            problem = (
                f"{len(missing)} missing keys, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}"
            )
    if problem:
        raise UserError(
            f"model.backbone.weights = {weights} does not fit a torchvision {type(resnet).__name__} "
            f"of model.backbone.name ({problem})"
        )


def dcn_stages(config: BackboneConfig) -> tuple[str, ...]:
    """The stages whose 3x3 convs are DCNv2, as in the official dcnv2 models: c3-c5 of a ResNet,
    c4-c5 of a ResNeXt."""
    if not config.dcn:
        return ()
    return ("layer3", "layer4") if config.name.startswith("resnext") else ("layer2", "layer3", "layer4")


def load_msra_weights(resnet: nn.Module, config: BackboneConfig) -> None:
    """Load official ImageNet weights into an MSRA-style ``resnet``: ``config.weights`` is a catalog
    name (or ``imagenet``, the catalog entry of ``config.name``), a Detectron ``.pkl``, or a ``.pth``
    state dict in the official layout (``backbone.body.*`` keys, FrozenBN buffers included).

    DCNv2 offset convs absent from the file keep their initialisation, as in the official loader.
    """
    name = pretrained.resolve_name(config.weights, config.name, config.style)
    is_file = Path(name).suffix in (".pkl", ".pth", ".pt") or Path(name).exists()
    if name not in pretrained.CATALOG and not is_file:
        raise UserError(
            f"model.backbone.weights = {config.weights!r}: style 'msra' takes an official catalog name "
            f"({', '.join(pretrained.CATALOG)}), a Detectron .pkl or a .pth file with the official backbone.body.* "
            "keys (torchvision weights need model.backbone.style=torchvision)"
        )
    path = pretrained.locate(name, config.name, config.style)
    if path.suffix == ".pkl":
        dcn_layers = [int(stage.removeprefix("layer")) for stage in dcn_stages(config)]
        state = official_backbone_state(read_blobs(path), dcn_layers)
    else:
        state = _read_state_dict(path)
    converted = convert_backbone_state_dict(state, resnet)
    resnet.load_state_dict({k.removeprefix(BODY_PREFIX): v for k, v in converted.items()}, strict=False)


def _stride_in_1x1(resnet: nn.Module) -> None:
    """Move the stride of every strided ``Bottleneck`` from its 3x3 conv to its first 1x1 conv."""
    for block in resnet.modules():
        if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


class ResNetFPN(nn.Module):
    """A ResNet or ResNeXt with frozen BatchNorm, and an FPN over C3-C5 with P6, P7 on top.

    ``config.style`` ``"msra"`` makes the official models' backbone out of torchvision's parts:
    FrozenBN without eps and, for a ResNet (not a ResNeXt), the stride in the first 1x1 conv.

    P6 is a stride-2 3x3 conv on P5 (``p6_from="p5"``, the official ATSS ``USE_C5: False``) or
    on C5 (``"c5"``, RetinaNet's), and P7 one on ReLU(P6), the official ``LastLevelP6P7``.
    With ``config.dcn`` the 3x3 convs of stages c3-c5 (ResNet) or c4-c5 (ResNeXt) become DCNv2.
    """

    def __init__(self, config: BackboneConfig, out_channels: int, p6_from: str = "p5") -> None:
        super().__init__()
        if p6_from not in ("p5", "c5"):
            raise ValueError(f"p6_from must be 'p5' or 'c5', not {p6_from!r}")
        msra = config.style == "msra"
        norm_layer = partial(FrozenBatchNorm2d, eps=0.0) if msra else FrozenBatchNorm2d
        resnet = getattr(torchvision.models, config.name)(weights=None, norm_layer=norm_layer)
        if config.dcn and not isinstance(resnet.layer4[0], Bottleneck):
            raise UserError(
                f"model.backbone.dcn needs a Bottleneck ResNet: resnet50, resnet101 or a ResNeXt, not {config.name}"
            )
        resnext = config.name.startswith("resnext")
        if msra and not resnext:
            _stride_in_1x1(resnet)
        if config.weights and not msra:
            load_weights(resnet, weights_name(config.name, config.weights))
        if config.dcn:
            # The official dcnv2 models: DCN in c3-c5 of a ResNet, c4-c5 of a ResNeXt.
            for stage in dcn_stages(config):
                replace_with_dcn(getattr(resnet, stage))
        if config.weights and msra:
            load_msra_weights(resnet, config)
        trainable = _STAGES[: config.trainable_stages]
        for name, parameter in resnet.named_parameters():
            parameter.requires_grad_(name.split(".")[0] in trainable)
        c5_channels = resnet.fc.in_features
        extra_blocks = LastLevelP6P7(c5_channels if p6_from == "c5" else out_channels, out_channels)
        # torchvision picks P5 whenever the channel counts match; C5 may have out_channels too.
        extra_blocks.use_P5 = p6_from == "p5"
        self.body = BackboneWithFPN(
            resnet,
            return_layers={"layer2": "c3", "layer3": "c4", "layer4": "c5"},
            in_channels_list=[c5_channels // 4, c5_channels // 2, c5_channels],
            out_channels=out_channels,
            extra_blocks=extra_blocks,
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
