"""The official ATSS code's state-dict layout (sfzhang15/ATSS, a maskrcnn-benchmark fork) mapped onto ours.

Official keys: ``backbone.body.*`` (the ResNet, stem as ``stem.conv1`` / ``stem.bn1``, DCNv2 convs as
``conv2.conv`` + ``conv2.offset``), ``backbone.fpn.*`` (``fpn_inner2..4``, ``fpn_layer2..4``,
``top_blocks.p6/p7``), ``rpn.head.*`` (``cls_tower``, ``bbox_tower``, ``cls_logits``, ``bbox_pred``,
``centerness``, one ``scales.<l>.scale`` per level) and the five ``rpn.anchor_generator.cell_anchors.<l>``.
The mapping is strict: every official key is used exactly once and every key of ours is filled.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from atssrepro.config import ModelConfig
from atssrepro.errors import UserError
from atssrepro.model.anchors import STRIDES, cell_anchors

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
_SCALE = re.compile(r"rpn\.head\.scales\.(\d+)\.scale")
_CELL_ANCHORS = re.compile(r"rpn\.anchor_generator\.cell_anchors\.(\d+)")


def _our_key(key: str) -> str | None:
    """Our key for one official key (scales and cell anchors aside), or None if no rule knows it."""
    for pattern, template in _RULES:
        match = pattern.fullmatch(key)
        if match is not None:
            groups = match.groups()
            level = int(groups[0]) - 2 if groups[0].isdigit() else None
            return template.format(*groups, level=level)
    return None


def expected_state_dict(model: ModelConfig, num_classes: int) -> dict[str, torch.Size]:
    """Key -> shape of our detector's state dict for ``model``, built on the meta device (no memory,
    no weights loaded)."""
    from atssrepro.model.detector import OneStageDetector

    unweighted = dataclasses.replace(model, backbone=dataclasses.replace(model.backbone, weights=""))
    with torch.device("meta"):
        detector = OneStageDetector(unweighted, num_classes)
    return {key: value.shape for key, value in detector.state_dict().items()}


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return f"{len(keys)} keys ({shown}{', ...' if len(keys) > 3 else ''})"


def _check_cell_anchors(official: Mapping[str, torch.Tensor], model: ModelConfig) -> None:
    """The checkpoint's cell anchors must be the official "+1" version of our anchors: the same
    centre (S/2 there, 0 here) and sides (``x2 - x1 + 1`` there, ``x2 - x1`` here), to 1 px (rounding)."""
    a = model.anchors
    found = sorted(key for key in official if _CELL_ANCHORS.fullmatch(key))
    wanted = [f"rpn.anchor_generator.cell_anchors.{level}" for level in range(len(STRIDES))]
    if found != wanted:
        raise UserError(f"official state dict: has cell anchors {found}, expected {wanted}")
    for key, stride in zip(wanted, STRIDES):
        theirs = official[key].detach().cpu().to(torch.float64)
        ours = cell_anchors(stride, a.scale, a.aspect_ratios, a.scales_per_octave).to(torch.float64)
        fits = theirs.shape == ours.shape and (
            torch.allclose(theirs[:, 2:] - theirs[:, :2] + 1, ours[:, 2:] - ours[:, :2], atol=1)
            and torch.allclose((theirs[:, :2] + theirs[:, 2:]) / 2, torch.full_like(ours[:, :2], stride / 2), atol=1)
        )
        if not fits:
            raise UserError(
                f"official state dict: {key} = {theirs.tolist()} are not the anchors of model.anchors "
                f"(scale {a.scale}, aspect_ratios {list(a.aspect_ratios)}, scales_per_octave {a.scales_per_octave})"
            )


def convert_official_state_dict(
    official: Mapping[str, torch.Tensor], model: ModelConfig, *, backbone_only: bool = False
) -> dict[str, torch.Tensor]:
    """Map an official ATSS state dict (keys without ``module.``) onto our detector's keys.

    Strict: a key no rule knows, a key of ours left unfilled, two official keys for one of ours, or a
    shape that does not fit ``model`` is a one-line :class:`UserError` naming the keys. The per-level
    ``scales.<l>.scale`` [1] become our ``head.scales`` [5]; the cell anchors are checked against
    ``model.anchors`` and dropped (our anchors are computed).

    With ``backbone_only`` the official dict holds ``backbone.body.*`` keys only (ImageNet weights)
    and the result only our backbone body's keys; DCNv2 offset convs (``*.conv2.offset.*``), which
    ImageNet weights never hold, may be absent and then keep their initialisation.
    """
    if backbone_only:
        strays = sorted(k for k in official if not k.startswith("backbone.body."))
        if strays:
            raise UserError(f"ImageNet weights: keys outside backbone.body.*: {_names(strays)}")
        num_classes = 80
    else:
        if "rpn.head.cls_logits.bias" not in official:
            raise UserError("official state dict: no rpn.head.cls_logits.bias; is it an official ATSS checkpoint?")
        per_location = len(model.anchors.aspect_ratios) * model.anchors.scales_per_octave
        num_classes = official["rpn.head.cls_logits.bias"].shape[0] // per_location
    expected = expected_state_dict(model, num_classes)
    if backbone_only:
        expected = {k: s for k, s in expected.items() if k.startswith(BODY_PREFIX)}

    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    duplicates: list[str] = []
    scales: dict[int, torch.Tensor] = {}
    for key, value in official.items():
        scale = _SCALE.fullmatch(key)
        if scale and not backbone_only:
            scales[int(scale.group(1))] = value
            continue
        if _CELL_ANCHORS.fullmatch(key) and not backbone_only:
            continue  # checked below
        ours = _our_key(key)
        if ours is None or ours not in expected:
            unknown.append(key)
        elif ours in converted:
            duplicates.append(key)
        else:
            converted[ours] = value
    if unknown:
        raise UserError(f"official state dict: {_names(sorted(unknown))} fit no key of this model config")
    if duplicates:
        raise UserError(f"official state dict: {_names(sorted(duplicates))} fill a key that another key filled already")
    if not backbone_only:
        _check_cell_anchors(official, model)
        if "head.scales" in expected:
            levels = len(STRIDES)
            if sorted(scales) != list(range(levels)) or any(s.numel() != 1 for s in scales.values()):
                raise UserError(
                    f"official state dict: needs rpn.head.scales.0..{levels - 1}.scale, one number each, "
                    f"has levels {sorted(scales)}"
                )
            converted["head.scales"] = torch.cat([scales[level].reshape(1) for level in range(levels)])
        elif scales:
            raise UserError("official state dict: has rpn.head.scales.*, but model.head.learnable_scales is false")

    missing = sorted(k for k in expected if k not in converted)
    if backbone_only:
        missing = [k for k in missing if ".conv2.offset." not in k]
    if missing:
        raise UserError(f"official state dict: misses {_names(missing)} of this model config")
    wrong = [
        f"{key} {tuple(value.shape)} (expected {tuple(expected[key])})"
        for key, value in converted.items()
        if value.shape != expected[key]
    ]
    if wrong:
        raise UserError(f"official state dict: shapes do not fit this model config: {'; '.join(wrong[:3])}")
    return converted


def read_official_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The model state dict of an official checkpoint file, read with ``weights_only=True``.

    The official trainer saves ``{"model": {"module.<key>": tensor}, "optimizer", "scheduler",
    "iteration"}``; a file without ``"model"`` is taken as the state dict itself. ``module.`` is
    stripped only when every key has it, as the official loader does.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: official checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{path}: holds objects other than tensors and plain containers, refused for safety "
            f"({str(e).splitlines()[0][:200]}); re-save its 'model' state dict alone with torch.save"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise UserError(f"{path}: not a readable torch checkpoint ({str(e).splitlines()[0][:200]})") from None
    model = state.get("model", state) if isinstance(state, dict) else state
    if (
        not isinstance(model, dict)
        or not model
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())
    ):
        raise UserError(f"{path}: neither a state dict nor a checkpoint with a 'model' state dict of tensors")
    if all(key.startswith("module.") for key in model):
        model = {key.removeprefix("module."): value for key, value in model.items()}
    return model
