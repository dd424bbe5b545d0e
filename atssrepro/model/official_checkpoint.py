"""Official ATSS checkpoints (sfzhang15/ATSS model zoo): read one, and map it onto our detector.

The key mapping is ``model/official.py``'s; here the expected keys are those of our whole detector,
and the per-level scales and cell anchors are checked and converted.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from atssrepro.config import ModelConfig
from atssrepro.errors import UserError
from atssrepro.model.anchors import STRIDES, cell_anchors
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.official import CELL_ANCHORS_KEY, SCALE_KEY, check_filled, map_keys


def expected_state_dict(model: ModelConfig, num_classes: int) -> dict[str, torch.Size]:
    """Key -> shape of our detector's state dict for ``model``, built on the meta device (no memory,
    no weights loaded)."""
    unweighted = dataclasses.replace(model, backbone=dataclasses.replace(model.backbone, weights=""))
    with torch.device("meta"):
        detector = OneStageDetector(unweighted, num_classes)
    return {key: value.shape for key, value in detector.state_dict().items()}


def _check_cell_anchors(official: Mapping[str, torch.Tensor], model: ModelConfig) -> None:
    """The checkpoint's cell anchors must be the official "+1" version of our anchors: the same
    centre (S/2 there, 0 here) and sides (``x2 - x1 + 1`` there, ``x2 - x1`` here), to 1 px (rounding)."""
    a = model.anchors
    found = sorted(key for key in official if CELL_ANCHORS_KEY.fullmatch(key))
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


def convert_official_state_dict(official: Mapping[str, torch.Tensor], model: ModelConfig) -> dict[str, torch.Tensor]:
    """Map an official ATSS state dict (keys without ``module.``) onto our detector's keys.

    Strict: a key no rule knows, a key of ours left unfilled, two official keys for one of ours, or a
    shape that does not fit ``model`` is a one-line :class:`UserError` naming the keys. The per-level
    ``scales.<l>.scale`` [1] become our ``head.scales`` [5]; the cell anchors are checked against
    ``model.anchors`` and dropped (our anchors are computed).
    """
    where = "official state dict"
    if "rpn.head.cls_logits.bias" not in official:
        raise UserError(f"{where}: no rpn.head.cls_logits.bias; is it an official ATSS checkpoint?")
    per_location = len(model.anchors.aspect_ratios) * model.anchors.scales_per_octave
    expected = expected_state_dict(model, official["rpn.head.cls_logits.bias"].shape[0] // per_location)
    converted, others = map_keys(official, expected, where)
    _check_cell_anchors(official, model)
    scales = {int(match[1]): official[key] for key in others if (match := SCALE_KEY.fullmatch(key))}
    if "head.scales" in expected:
        levels = len(STRIDES)
        if sorted(scales) != list(range(levels)) or any(s.numel() != 1 for s in scales.values()):
            raise UserError(
                f"{where}: needs rpn.head.scales.0..{levels - 1}.scale, one number each, has levels {sorted(scales)}"
            )
        converted["head.scales"] = torch.cat([scales[level].reshape(1) for level in range(levels)])
    elif scales:
        raise UserError(f"{where}: has rpn.head.scales.*, but model.head.learnable_scales is false")
    check_filled(converted, expected, where)
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
