"""Presets: how much compute a run takes, never which experiment it is.

A :class:`Preset` is config fields applied on top of a run's experiment (its table row, or its
config file) and the judgement its runs get: only runs of a preset that keeps the paper's protocol
are compared with the paper's numbers. ``paper`` is the official recipe (the defaults); ``smoke``
trains and evaluates on 2 CPU cores in well under a minute; ``demo`` trains the smoke model long
enough to learn the embedded synthetic dataset (~2 minutes). Presets never touch what makes the
experiment (assignment, anchors, losses). A user's own protocol is a preset file (:func:`preset_file`):

    name = "quarter640"
    description = "a quarter of the 1x schedule at 640 pixels"

    [overrides]
    train.iterations = 22500
    train.lr_steps = [15000, 20000]
    data.train_short_side = [640, 640]
    data.test_short_side = 640

Its runs are never compared with the paper's numbers. Every command finds a preset, by name or
file, with :func:`preset_named`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from atssrepro import schema
from atssrepro.config.sections import Config, check_consistency
from atssrepro.errors import UserError
from atssrepro.schema import ANY, Rule
from atssrepro.tomlfile import load_toml

PRESET_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
PRESET_NAME = Rule(lambda v: bool(PRESET_NAME_PATTERN.match(v)), "lowercase letters, digits, '_' and '-'")
EXPERIMENT = ("model.assign", "model.anchors", "model.loss", "model.regression")
"""What makes an experiment, which the tables' rows compare: a preset never sets these keys."""


@dataclass(frozen=True)
class Preset:
    name: Annotated[str, PRESET_NAME]
    """Recorded in each run's run.json and shown beside its verdicts."""
    overrides: Annotated[dict[str, Any], ANY] = field(default_factory=dict, hash=False)
    """Config fields as nested TOML data, applied after the row (or config file) and before ``--set``."""
    comparable: bool = False
    """Its runs follow the paper's protocol: reports judge them against the published numbers, and
    the measured throughputs (taken at the paper's image size) give their hours. Never from a file."""
    description: Annotated[str, ANY] = ""

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
    """The built-in preset ``name``, or the preset file ``name`` when it ends in .toml; an unknown name
    is a one-line error with the closest one."""
    if name.endswith(".toml"):
        return preset_file(Path(name))
    if name in PRESETS:
        return PRESETS[name]
    hint = difflib.get_close_matches(name, PRESETS, n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    raise UserError(f"unknown preset {name!r}{suggestion} (presets: {', '.join(PRESETS)}, or a preset file FILE.toml)")


def preset_file(path: Path) -> Preset:
    """A user's preset: ``name``, ``description`` and ``[overrides]`` (config fields) of a TOML file, every
    field and config key checked. It is never comparable with the paper, takes no built-in name, changes
    something, and sets none of :data:`EXPERIMENT`."""
    if not path.is_file():
        raise UserError(f"--preset {path}: no such preset file (a TOML file with name, description and [overrides])")
    where = str(path)
    preset = schema.read(Preset, load_toml(path), where, fixed={"comparable": False})
    if preset.name in PRESETS:
        raise UserError(f"{where}: name = {preset.name!r} is a built-in preset's; give your protocol its own name")
    config = schema.merge(Config(), preset.overrides, f"{where}: overrides", noun="config key")
    for key in EXPERIMENT:
        head, _, rest = key.partition(".")
        if rest in preset.overrides.get(head, {}):
            raise UserError(
                f"{where}: overrides: {key} is what the tables' rows compare; a preset changes how much compute "
                "a run takes, never the experiment"
            )
    if config == Config():
        raise UserError(f"{where}: overrides change nothing: that is the paper preset (--preset paper)")
    try:
        check_consistency(config)
    except UserError as e:
        raise UserError(f"{where}: overrides: {e}") from None
    return preset


def is_comparable(name: str) -> bool:
    """Whether the runs of the preset called ``name`` are judged against the paper: a preset file's never are."""
    return name in PRESETS and PRESETS[name].comparable


def as_preset(preset: Preset | str) -> Preset:
    """``preset`` itself, or the preset of that name or file."""
    return preset if isinstance(preset, Preset) else preset_named(preset)
