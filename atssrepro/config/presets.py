"""Presets: how much compute a run takes, never which experiment it is.

A :class:`Preset` is config fields applied on top of a run's experiment (its table row, or its
config file) and the judgement its runs get: only runs of a preset that keeps the paper's protocol
are compared with the paper's numbers. ``paper`` is the official recipe (the defaults); ``smoke``
trains and evaluates on 2 CPU cores in well under a minute; ``demo`` trains the smoke model long
enough to learn the embedded synthetic dataset (~2 minutes). Presets never touch what makes the
experiment (assignment, anchors, losses). Every command finds a preset by name with
:func:`preset_named`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from atssrepro.errors import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    """Config fields as nested TOML data, applied after the row (or config file) and before ``--set``."""
    comparable: bool = False
    """Its runs follow the paper's protocol: reports judge them against the published numbers, and
    the measured throughputs (taken at the paper's image size) give their hours."""
    description: str = ""

    def __str__(self) -> str:
        return self.name


_SMOKE_MODEL = {
    # From scratch with no BatchNorm statistics to freeze, the torchvision style's unit-variance
    # input keeps the activations of an untrained ResNet in range; MSRA's 0-255 input does not.
    "backbone": {"name": "resnet18", "weights": "", "trainable_stages": 5, "dcn": False, "style": "torchvision"},
    "fpn_channels": 64,
    "head": {"channels": 64, "convs": 2},
}
_SMOKE_DATA = {"train_short_side": [224, 224], "test_short_side": 224, "max_size": 384, "num_workers": 2}
_SMOKE_TRAIN = {"batch_size": 2, "iterations": 20, "lr_steps": [15], "warmup_iters": 5, "checkpoint_every": 10,
                "log_every": 5}  # fmt: skip

PAPER = Preset("paper", {}, comparable=True, description="the official recipe")
SMOKE = Preset(
    "smoke",
    {"model": _SMOKE_MODEL, "data": _SMOKE_DATA, "train": _SMOKE_TRAIN},
    description="a ResNet-18 from scratch, 224-pixel images, 20 iterations of batch 2: CPU, under a minute",
)
DEMO = Preset(
    "demo",
    {
        "model": _SMOKE_MODEL,
        "data": {**_SMOKE_DATA, "train_short_side": [192, 192], "test_short_side": 192, "max_size": 320},
        "train": {
            **_SMOKE_TRAIN,
            "batch_size": 4,
            "warmup_iters": 10,
            "base_lr": 0.04,
            "iterations": 300,
            "lr_steps": [250],
            "checkpoint_every": 100,
            "log_every": 25,
        },
    },  # fmt: skip
    description="the smoke model trained 300 iterations: learns the synthetic dataset in ~2 minutes",
)
PRESETS: dict[str, Preset] = {preset.name: preset for preset in (PAPER, SMOKE, DEMO)}


def preset_named(name: str) -> Preset:
    """The built-in preset ``name``; an unknown name is a one-line error with the closest one."""
    if name in PRESETS:
        return PRESETS[name]
    hint = difflib.get_close_matches(name, PRESETS, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    raise UserError(f"unknown preset {name!r}{suggestion} (presets: {', '.join(PRESETS)})")


def as_preset(preset: Preset | str) -> Preset:
    """``preset`` itself, or the built-in preset of that name."""
    return preset if isinstance(preset, Preset) else preset_named(preset)
