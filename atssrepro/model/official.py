"""The official ATSS code's state-dict keys (sfzhang15/ATSS, a maskrcnn-benchmark fork) mapped onto ours.

Official keys: ``backbone.body.*`` (the ResNet, stem as ``stem.conv1`` / ``stem.bn1``, DCNv2 convs as
``conv2.conv`` + ``conv2.offset``), ``backbone.fpn.*`` (``fpn_inner2..4``, ``fpn_layer2..4``,
``top_blocks.p6/p7``), ``rpn.head.*`` (``cls_tower``, ``bbox_tower``, ``cls_logits``, ``bbox_pred``,
``centerness``, one ``scales.<l>.scale`` per level) and the five ``rpn.anchor_generator.cell_anchors.<l>``.
:func:`map_keys` maps them strictly onto the keys a network expects: every official key is used
exactly once and every expected key is filled. :func:`convert_backbone_state_dict` loads ImageNet
weights into the ResNet being built; a whole checkpoint is ``model/official_checkpoint.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from atssrepro.errors import UserError

BODY_PREFIX = "backbone.body.body."
"""Where the ResNet's own keys start in our detector's state dict."""

# (official pattern, our key as a template of its groups), tried in order; the first match wins.
# The FPN's levels 2..4 (C3..C5) are our blocks 0..2; DCNv2's ``<conv>.conv.*`` is our ``<conv>.*``.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        (r"backbone\.body\.stem\.((?:conv1|bn1)\..+)", BODY_PREFIX + "{0}"),
        (r"backbone\.body\.(layer[1-4]\.\d+\.conv2)\.conv\.weight", BODY_PREFIX + "{0}.weight"),
        (r"backbone\.body\.(layer[1-4]\.\d+\..+)", BODY_PREFIX + "{0}"),
        (r"backbone\.fpn\.fpn_inner([2-4])\.(weight|bias)", "backbone.body.fpn.inner_blocks.{level}.0.{1}"),
        (r"backbone\.fpn\.fpn_layer([2-4])\.(weight|bias)", "backbone.body.fpn.layer_blocks.{level}.0.{1}"),
        (r"backbone\.fpn\.top_blocks\.(p6|p7)\.(weight|bias)", "backbone.body.fpn.extra_blocks.{0}.{1}"),
        (r"rpn\.head\.cls_tower\.(\d+)\.(?:conv\.)?(weight|bias)", "head.cls_tower.{0}.{1}"),
        (r"rpn\.head\.bbox_tower\.(\d+)\.(?:conv\.)?(weight|bias)", "head.reg_tower.{0}.{1}"),
        (r"rpn\.head\.cls_tower\.(\d+)\.offset\.(weight|bias)", "head.cls_tower.{0}.offset.{1}"),
        (r"rpn\.head\.bbox_tower\.(\d+)\.offset\.(weight|bias)", "head.reg_tower.{0}.offset.{1}"),
        (r"rpn\.head\.cls_logits\.(weight|bias)", "head.cls_logits.{0}"),
        (r"rpn\.head\.bbox_pred\.(weight|bias)", "head.box_regression.{0}"),
        (r"rpn\.head\.centerness\.(weight|bias)", "head.centerness.{0}"),
    )
)
SCALE_KEY = re.compile(r"rpn\.head\.scales\.(\d+)\.scale")
CELL_ANCHORS_KEY = re.compile(r"rpn\.anchor_generator\.cell_anchors\.(\d+)")


def _our_key(key: str) -> str | None:
    """Our key for one official key (scales and cell anchors aside), or None if no rule knows it."""
    for pattern, template in _RULES:
        match = pattern.fullmatch(key)
        if match is not None:
            groups = match.groups()
            level = int(groups[0]) - 2 if groups[0].isdigit() else None
            return template.format(*groups, level=level)
    return None


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return f"{len(keys)} keys ({shown}{', ...' if len(keys) > 3 else ''})"


def map_keys(
    official: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], where: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our key -> tensor for each official key of ``official`` (scales and cell anchors aside, which
    the caller handles: they are returned by name) that a rule maps onto a key of ``expected``.

    A key no rule knows or that ``expected`` lacks, and two official keys for one of ours, are a
    one-line :class:`UserError` (``where`` names the input); unfilled and misshapen keys are the
    caller's to check (:func:`check_filled`).
    """
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    duplicates: list[str] = []
    others: list[str] = []
    for key, value in official.items():
        if SCALE_KEY.fullmatch(key) or CELL_ANCHORS_KEY.fullmatch(key):
            others.append(key)
            continue
        ours = _our_key(key)
        if ours is None or ours not in expected:
            unknown.append(key)
        elif ours in converted:
            duplicates.append(key)
        else:
            converted[ours] = value
    if unknown:
        raise UserError(f"{where}: {_names(sorted(unknown))} fit no key of this model config")
    if duplicates:
        raise UserError(f"{where}: {_names(sorted(duplicates))} fill a key that another key filled already")
    return converted, others


def check_filled(
    converted: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], where: str, optional: str = ""
) -> None:
    """Every key of ``expected`` (but those containing ``optional``, when given) is in ``converted``,
    with the expected shape; else a one-line :class:`UserError` naming the keys."""
    missing = sorted(k for k in expected if k not in converted and not (optional and optional in k))
    if missing:
        raise UserError(f"{where}: misses {_names(missing)} of this model config")
    wrong = [
        f"{key} {tuple(value.shape)} (expected {tuple(expected[key])})"
        for key, value in converted.items()
        if value.shape != expected[key]
    ]
    if wrong:
        raise UserError(f"{where}: shapes do not fit this model config: {'; '.join(wrong[:3])}")


def convert_backbone_state_dict(official: Mapping[str, torch.Tensor], resnet: nn.Module) -> dict[str, torch.Tensor]:
    """ImageNet weights in the official layout (``backbone.body.*`` keys only) mapped onto ``resnet``,
    the torchvision ResNet (or ResNeXt) being built, as our detector's keys (``BODY_PREFIX`` + its keys).

    Its classifier (``fc.*``) takes nothing. DCNv2 offset convs (``*.conv2.offset.*``), which ImageNet
    weights never hold, may be absent and then keep their initialisation.
    """
    strays = sorted(k for k in official if not k.startswith("backbone.body."))
    if strays:
        raise UserError(f"ImageNet weights: keys outside backbone.body.*: {_names(strays)}")
    expected = {BODY_PREFIX + k: v.shape for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    converted, _ = map_keys(official, expected, "official state dict")
    check_filled(converted, expected, "official state dict", optional=".conv2.offset.")
    return converted
