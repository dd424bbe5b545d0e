"""The typed configuration that fully describes one training run.

A run is ``Config(model, data, train, eval)``. The defaults are the official recipe of
``configs/atss/atss_R_50_FPN_1x.yaml`` (the paper's main model, Table 3 row 2); see
ATSS_TABLES.md §1. A config is built in layers, each overriding the previous one:

    defaults  ->  a named built-in config or a TOML file  ->  a preset  ->  ``--set key=value``

Every field is plain data, so a resolved config round-trips through TOML and gets a
content hash (:func:`config_id`) that names its run folder. Every field also has a value rule in
:data:`RULES`, checked whenever a value enters a config (a TOML file, a preset, ``--set``, a table
spec, a checkpoint's config read back); :func:`check_consistency` adds the rules between fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import tomli_w

from atssrepro.errors import UserError

BUILTIN_CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class BackboneConfig:
    name: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d", "resnext101_64x4d"] = "resnet50"
    """A torchvision ResNet or ResNeXt; its stages C3-C5 feed the FPN."""
    weights: str = "imagenet"
    """Pretrained weights, or empty to train from scratch. Style ``msra``: ``imagenet`` (the official
    ImageNet weights of ``name``: MSRA R-50/R-101, FAIR X-101-32x8d/64x4d), a catalog name of
    ``model/pretrained.py`` (``MSRA/R-50``, ``MSRA/R-101``, ``FAIR/20171220/X-101-32x8d``,
    ``FAIR/20171220/X-101-64x4d``: taken from ``$ATSSREPRO_WEIGHTS`` or ``~/.cache/atssrepro/weights``,
    downloaded there when absent), a Detectron ``.pkl`` file, or a ``.pth`` state dict with the official
    ``backbone.body.*`` keys. Style ``torchvision``: ``imagenet`` (torchvision's classic ImageNet weights
    of ``name``, ``IMAGENET1K_V1``; for ``resnext101_64x4d`` those come from torchvision's new recipe, not
    the FAIR weights of the paper), a torchvision weights name such as
    ``ResNet50_Weights.IMAGENET1K_V2`` or a local ``.pth`` torchvision state dict."""
    trainable_stages: int = 3
    """How many of the last stages train (0-5); 3 freezes the stem and res2 (``FREEZE_CONV_BODY_AT 2``)."""
    dcn: bool = False
    """DCNv2 (modulated deformable 3x3 convs) in stages c3-c5 of a ResNet, c4-c5 of a ResNeXt."""
    style: Literal["msra", "torchvision"] = "msra"
    """``msra``: the official models' backbone (Detectron/Caffe2 weights): FrozenBN without eps, input
    BGR 0-255 minus the Caffe mean with std 1, and for a ResNet the stride of block 0 of res3-res5 in
    its first 1x1 conv (``STRIDE_IN_1X1``; a ResNeXt keeps it in the 3x3 conv, the FAIR style).
    ``torchvision``: torchvision's ResNets (stride in the 3x3 conv, FrozenBN eps 1e-5, RGB input
    normalised by the ImageNet mean and std), as mmdetection's pytorch-style ATSS; it takes
    torchvision weights."""


@dataclass(frozen=True)
class HeadConfig:
    channels: int = 256
    convs: int = 4
    """Conv -> GroupNorm(32) -> ReLU layers in each tower."""
    group_norm: bool = True
    """GroupNorm in the towers (Table 1 "GroupNorm")."""
    centerness: bool = True
    """A centerness branch on the regression tower, used as sqrt(cls x centerness) at test time."""
    learnable_scales: bool = True
    """One learnable scalar per level on the regression output (Table 1 "Scalar")."""
    dcn: bool = False
    """DCNv2 in the last conv of each tower (the official dcnv2 models)."""
    point_bias_init: float = 4.0
    """Initial bias of the regression output with ``model.regression = 'point'`` (any finite number):
    4.0 starts every point at the 8S box, the official ATSS POINT head; 0.0 is the FCOS module's
    (Table 3 "FCOS + Center sampling"). Box regression always starts at bias 0."""


@dataclass(frozen=True)
class AnchorConfig:
    scale: float = 8.0
    """Anchor side in units of the level stride: 8 gives 8S = 64..1024 on P3..P7."""
    aspect_ratios: tuple[float, ...] = (1.0,)
    """Height / width of each anchor at a location (maskrcnn-benchmark convention), each > 0; shapes
    are rounded as the official generator rounds them (``model/anchors.py::cell_anchors``)."""
    scales_per_octave: int = 1
    """Octave scales 2^(i/n), i < n, multiplied on ``scale``."""


@dataclass(frozen=True)
class AssignConfig:
    strategy: Literal["atss", "iou", "ssc", "center_sampling"] = "atss"
    """How positives are chosen: ATSS; RetinaNet's IoU thresholds; FCOS's spatial and scale
    constraint; or FCOS's constraint restricted to a radius around the GT centre (Table 3 "lite")."""
    topk: int = 9
    """atss: candidates per pyramid level, multiplied by the anchors per location (k in Table 4)."""
    positive_iou: float = 0.5
    """iou: an anchor with IoU >= this is positive."""
    negative_iou: float = 0.4
    """iou: an anchor with IoU < this is negative; in between it is ignored."""
    low_quality_matches: bool = True
    """iou: every GT also keeps the anchors of its highest IoU."""
    in_gt_box: bool = False
    """iou: positives whose centre lies outside their GT are ignored (Table 1 "In GT Box")."""
    scale_ranges: tuple[float, ...] = (0.0, 64.0, 128.0, 256.0, 512.0, float("inf"))
    """ssc, center_sampling: level l takes objects whose max(l, t, r, b) lies in [r_l, r_l+1]."""
    center_radius: float = 1.5
    """center_sampling: candidates lie within this many strides of the GT centre."""


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    regression: Literal["giou", "smooth_l1", "ltrb_iou", "ltrb_giou"] = "giou"
    """``giou``: GIoU on decoded boxes (official ATSS); ``smooth_l1``: RetinaNet's smooth-L1 on encoded
    targets (Table 1 "GIoU Loss" off); ``ltrb_iou`` / ``ltrb_giou``: the FCOS module's IOULoss on the
    stride-normalised (l, t, r, b) with the IoU smoothed as (inter + 1) / (union + 1), -log IoU or
    1 - GIoU (needs ``model.regression = 'point'``)."""
    smooth_l1_beta: float = 0.11
    """Smooth-L1 transition point (> 0): 0.11, the official ``RETINANET.BBOX_REG_BETA``."""
    reg_weight: float = 2.0
    """Weight of the regression loss (>= 0): 2.0 is the official ATSS GIoU weight; RetinaNet's smooth-L1
    and the FCOS module's IOULoss use 1.0."""
    normalizer: Literal["atss", "retinanet"] = "atss"
    """How the losses are normalised (``model/losses.py::combine_losses``): ``atss`` over the whole
    batch by the mean #positives per padding group (official ATSS and FCOS); ``retinanet`` per padding
    group, classification by #positives + #images and smooth-L1 by max(1, 4 #positives), as the
    maskrcnn-benchmark RetinaNet does per GPU (needs ``smooth_l1`` and no centerness)."""


@dataclass(frozen=True)
class InferenceConfig:
    score_threshold: float = 0.05
    """Candidates need a classification probability above this (before centerness)."""
    pre_nms_topk: int = 1000
    """Candidates kept per level and image, ranked by cls x centerness (cls alone without centerness)."""
    nms_iou: float = 0.6
    detections_per_image: int = 100


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn_channels: int = 256
    p6_from: Literal["p5", "c5"] = "p5"
    """P6 is a stride-2 conv on P5 (official ATSS, ``USE_C5: False``) or on C5 (RetinaNet, FCOS paper)."""
    head: HeadConfig = field(default_factory=HeadConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    regression: Literal["box", "point"] = "box"
    """Regress anchor-box deltas (RetinaNet) or stride-normalised l, t, r, b distances from the
    anchor point (FCOS); assignment uses the anchor box either way."""
    loss: LossConfig = field(default_factory=LossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/coco"
    """Dataset root in the COCO 2017 layout; the four paths below are relative to it."""
    train_ann: str = "annotations/instances_train2017.json"
    train_images: str = "train2017"
    val_ann: str = "annotations/instances_val2017.json"
    val_images: str = "val2017"
    train_short_side: tuple[int, int] = (800, 800)
    """Inclusive range [low, high] the training shorter side is drawn from; (640, 800) is the 2x
    multi-scale recipe, [800, 800] a fixed size. Always two numbers: a one-element list is an error."""
    test_short_side: int = 800
    max_size: int = 1333
    """Cap on the longer side, at training and at test."""
    flip_prob: float = 0.5
    size_divisible: int = 32
    num_workers: int = 4
    """Data-loading worker processes per training process."""


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16
    """Global batch over all processes."""
    pad_group: int = 2
    """Images padded to one canvas and run through the model together (>= 1): the official per-GPU
    batch, 16 images over 8 GPUs = 2. Each process splits its share of ``batch_size`` into groups of
    this many, so padding, the head's GroupNorm statistics and the per-group loss normalisers never
    depend on the number of processes; ``batch_size`` / processes must be a multiple of it."""
    base_lr: float = 0.01
    """Learning rate at batch 16; the run uses ``base_lr * batch_size / 16``."""
    iterations: int = 90_000
    lr_steps: tuple[int, ...] = (60_000, 80_000)
    lr_gamma: float = 0.1
    warmup_iters: int = 500
    warmup_factor: float = 1.0 / 3.0
    warmup_method: Literal["constant", "linear"] = "constant"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    bias_lr_factor: float = 2.0
    bias_weight_decay: float = 0.0
    amp: Literal["off", "tf32", "bf16", "fp16"] = "off"
    """Training precision on CUDA: ``off`` is fp32 with TF32 math off, the official code's precision;
    ``tf32`` (TF32 tensor cores for convolutions and matmuls), ``bf16`` and ``fp16`` (autocast) are
    departures (docs/semantics.md). Ignored on the CPU, which always trains in fp32; evaluation and
    TTA always run in fp32, TF32 off."""
    checkpoint_every: int = 5000
    log_every: int = 20
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 1
    """Images per process at test time; padding changes AP by ~0.1, so it is fixed and recorded."""
    backend: Literal["pycocotools", "faster-coco-eval"] = "pycocotools"
    tta: bool = False
    """Multi-scale + flip testing with box voting, the official settings (``engine/tta.py``)."""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Presets change how much compute a run takes, never which experiment it is: `paper` is the
# official recipe (the defaults); `smoke` trains and evaluates on 2 CPU cores in well under a minute;
# `demo` trains the smoke model long enough to learn the embedded synthetic dataset (~2 minutes).
_SMOKE: dict[str, Any] = {
    "model": {
        # From scratch with no BatchNorm statistics to freeze, the torchvision style's unit-variance
        # input keeps the activations of an untrained ResNet in range; MSRA's 0-255 input does not.
        "backbone": {"name": "resnet18", "weights": "", "trainable_stages": 5, "dcn": False, "style": "torchvision"},
        "fpn_channels": 64,
        "head": {"channels": 64, "convs": 2},
    },
    "data": {"train_short_side": [224, 224], "test_short_side": 224, "max_size": 384, "num_workers": 2},
    "train": {
        "batch_size": 2,
        "iterations": 20,
        "lr_steps": [15],
        "warmup_iters": 5,
        "checkpoint_every": 10,
        "log_every": 5,
    },
}
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "smoke": _SMOKE,
    "demo": {
        "model": _SMOKE["model"],
        "data": {**_SMOKE["data"], "train_short_side": [192, 192], "test_short_side": 192, "max_size": 320},
        "train": {
            **_SMOKE["train"],
            "batch_size": 4,
            "warmup_iters": 10,
            "base_lr": 0.04,
            "iterations": 300,
            "lr_steps": [250],
            "checkpoint_every": 100,
            "log_every": 25,
        },
    },
}


# ---------------------------------------------------------------------------------------------
# Value rules: one per config field, by dotted key. The field's type is checked first (see
# `_coerce`; NaN is never a valid number), then its rule. A new field needs a line here:
# tests/test_config.py fails, naming the field, until it has one.


@dataclass(frozen=True)
class Rule:
    """What values a config field takes beyond its type. For a list field, ``check`` applies to
    each element; ``length`` and ``increasing`` to the list."""

    check: Callable[[Any], bool] = lambda value: True
    text: str = ""
    """The rule in words, for the error message: "an integer >= 1"."""
    allow_inf: bool = False
    """inf is a valid value (the open last bound of ``scale_ranges``); NaN never is."""
    length: int | None = None
    increasing: bool = False
    """Each element >= the previous one."""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already of the field's type) breaks the rule, or None."""
        items = value if isinstance(value, tuple) else (value,)
        if not self.allow_inf and any(isinstance(v, float) and math.isinf(v) for v in items):
            return "must be finite"
        if self.length is not None and len(items) != self.length:
            return f"must have exactly {self.length} elements"
        if self.increasing and list(items) != sorted(items):
            return "must be increasing"
        if not all(self.check(v) for v in items):
            return f"must be {self.text}"
        return None


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f">= {low}")


def between(low: float, high: float) -> Rule:
    """Inclusive range."""
    return Rule(lambda v: low <= v <= high, f"in [{low}, {high}]")


def positive(high: float = math.inf) -> Rule:
    """> 0 (and <= ``high``)."""
    return Rule(lambda v: 0 < v <= high, "> 0" if high == math.inf else f"in (0, {high}]")


ANY = Rule(text="any value of its type")
"""The field's type (a Literal, a bool, a free string) says everything there is to check."""
NONEMPTY = Rule(lambda v: bool(v.strip()), "a non-empty string")
PROBABILITY = between(0, 1)
IMAGE_SIDE = between(32, 8192)
"""Pixels: below 32 px the stride-128 level P7 has nothing to see; above 8192 no GPU holds the image."""

RULES: dict[str, Rule] = {
    "model.backbone.name": ANY,
    "model.backbone.style": ANY,
    "model.backbone.weights": ANY,
    "model.backbone.trainable_stages": between(0, 5),
    "model.backbone.dcn": ANY,
    "model.fpn_channels": at_least(1),
    "model.p6_from": ANY,
    "model.head.channels": at_least(1),
    "model.head.convs": at_least(1),
    "model.head.group_norm": ANY,
    "model.head.centerness": ANY,
    "model.head.learnable_scales": ANY,
    "model.head.dcn": ANY,
    "model.head.point_bias_init": ANY,  # any finite number; NaN and inf are refused for every field
    "model.anchors.scale": positive(),
    "model.anchors.aspect_ratios": positive(),
    "model.anchors.scales_per_octave": at_least(1),
    "model.assign.strategy": ANY,
    "model.assign.topk": at_least(1),
    "model.assign.positive_iou": PROBABILITY,
    "model.assign.negative_iou": PROBABILITY,
    "model.assign.low_quality_matches": ANY,
    "model.assign.in_gt_box": ANY,
    "model.assign.scale_ranges": Rule(lambda v: v >= 0, ">= 0", allow_inf=True, length=6, increasing=True),
    "model.assign.center_radius": positive(),
    "model.regression": ANY,
    "model.loss.focal_alpha": PROBABILITY,
    "model.loss.focal_gamma": between(0, 10),
    "model.loss.regression": ANY,
    "model.loss.normalizer": ANY,
    "model.loss.smooth_l1_beta": positive(),
    "model.loss.reg_weight": between(0, 100),
    "model.inference.score_threshold": PROBABILITY,
    "model.inference.pre_nms_topk": at_least(1),
    "model.inference.nms_iou": PROBABILITY,
    "model.inference.detections_per_image": at_least(1),
    "data.root": NONEMPTY,
    "data.train_ann": NONEMPTY,
    "data.train_images": NONEMPTY,
    "data.val_ann": NONEMPTY,
    "data.val_images": NONEMPTY,
    "data.train_short_side": dataclasses.replace(IMAGE_SIDE, length=2, increasing=True),
    "data.test_short_side": IMAGE_SIDE,
    "data.max_size": IMAGE_SIDE,
    "data.flip_prob": PROBABILITY,
    "data.size_divisible": between(1, 256),
    "data.num_workers": between(0, 256),
    "train.batch_size": at_least(1),
    "train.pad_group": at_least(1),
    "train.base_lr": positive(),
    "train.iterations": at_least(1),
    "train.lr_steps": Rule(lambda v: v >= 1, ">= 1", increasing=True),
    "train.lr_gamma": positive(1),
    "train.warmup_iters": at_least(0),
    "train.warmup_factor": positive(1),
    "train.warmup_method": ANY,
    "train.momentum": Rule(lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.weight_decay": between(0, 1),
    "train.bias_lr_factor": between(0, 100),
    "train.bias_weight_decay": between(0, 1),
    "train.amp": ANY,
    "train.checkpoint_every": at_least(1),
    "train.log_every": at_least(1),
    "train.seed": between(0, 2**63 - 1),
    "eval.batch_size": at_least(1),
    "eval.backend": ANY,
    "eval.tta": ANY,
}


def config_fields(cls: type = Config, prefix: str = "") -> list[str]:
    """The dotted keys of every leaf field of ``cls``: ``model.assign.topk``, ..."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = _field_types(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += config_fields(tp, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if args[-1] is not Ellipsis:
            return f"a list of {len(args)} {args[0].__name__}s"
        return f"a list of {args[0].__name__}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the field type ``tp`` and convert lists to tuples."""

    def bad() -> UserError:
        return UserError(f"{source}: {key} = {value!r} is not valid; expected {_describe(tp)}")

    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad()
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        fixed = args[-1] is not Ellipsis
        if not isinstance(value, (list, tuple)) or not value or (fixed and len(value) != len(args)):
            raise bad()
        return tuple(_coerce(v, args[0], key, source) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise bad()
    if not isinstance(value, tp):
        raise bad()
    if isinstance(value, float) and math.isnan(value):
        raise UserError(f"{source}: {key} = nan is not valid; expected a number")
    return value


def _merge(
    obj: Any, overrides: dict[str, Any], source: str, prefix: str = "", rules: Mapping[str, Rule] | None = None
) -> Any:
    """Return a copy of the dataclass ``obj`` with the nested ``overrides`` applied, validated
    against the field types and, for the fields that have one, the rule of ``rules``.

    Without ``rules`` (another dataclass than :class:`Config`), numbers must still be finite."""
    if not isinstance(overrides, dict):
        raise UserError(
            f"{source}: {prefix.rstrip('.') or 'the config'} must be a table of KEY = VALUE, not {overrides!r}"
        )
    types_ = _field_types(type(obj))
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        key = prefix + name
        if name not in types_:
            hint = difflib.get_close_matches(name, types_, n=1)
            suggestion = f"; did you mean {prefix + hint[0]!r}?" if hint else ""
            raise UserError(
                f"{source}: unknown config key {key!r}{suggestion} (keys here: {', '.join(prefix + k for k in types_)})"
            )
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                example = next(iter(_field_types(type(current))))
                raise UserError(f"{source}: {key} is a section; set its fields, e.g. {key}.{example}")
            changes[name] = _merge(current, value, source, key + ".", rules)
        else:
            changes[name] = _coerce(value, types_[name], key, source)
            rule = rules.get(key, Rule()) if rules is not None else Rule()
            problem = rule.problem(changes[name])
            if problem:
                shown = list(value) if isinstance(value, (list, tuple)) else value
                raise UserError(f"{source}: {key} = {shown!r} is not valid: {problem}")
    return dataclasses.replace(obj, **changes)


def _parse_value(text: str) -> Any:
    """A ``--set`` value is a TOML value (``7``, ``0.5``, ``[640, 800]``, ``true``) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(assignment: str) -> dict[str, Any]:
    """Turn ``"model.assign.topk=7"`` into ``{"model": {"assign": {"topk": 7}}}``."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set model.assign.topk=7")
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = _parse_value(text.strip())
    return nested


def load_toml_text(text: str, source: str = "<text>") -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source}: not valid TOML ({e})") from None


def load_toml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a TOML text file (not UTF-8 at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    return load_toml_text(text, str(path))


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in BUILTIN_CONFIG_DIR.glob("*.toml"))


def resolve_config_source(name_or_path: str) -> Path:
    """A built-in config name (``atss_r50_fpn_1x``) or the path of a TOML file."""
    builtin = BUILTIN_CONFIG_DIR / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    path = Path(name_or_path)
    if path.is_file():
        return path
    hint = difflib.get_close_matches(name_or_path, builtin_configs(), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    raise UserError(
        f"config {name_or_path!r} is neither a built-in config nor a file{suggestion} "
        f"(built-in: {', '.join(builtin_configs())})"
    )


def apply(config: Config, overrides: dict[str, Any], source: str) -> Config:
    """Apply nested ``overrides`` (from a TOML file, a preset or ``--set``) to ``config``."""
    return _merge(config, overrides, source, rules=RULES if isinstance(config, Config) else None)


def build_config(
    config: str | None = None,
    preset: str = "paper",
    overrides: typing.Sequence[str] = (),
    data_root: str | None = None,
) -> Config:
    """Resolve a run's config from the CLI's ``--config``, ``--preset``, ``--set`` and ``--data``."""
    resolved = Config()
    if config is not None:
        path = resolve_config_source(config)
        resolved = apply(resolved, load_toml(path), str(path))
    if preset not in PRESETS:
        hint = difflib.get_close_matches(preset, PRESETS, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise UserError(f"unknown preset {preset!r}{suggestion} (presets: {', '.join(PRESETS)})")
    resolved = apply(resolved, PRESETS[preset], f"preset {preset!r}")
    for assignment in overrides:
        resolved = apply(resolved, parse_override(assignment), f"--set {assignment}")
    if data_root is not None:
        resolved = dataclasses.replace(resolved, data=dataclasses.replace(resolved.data, root=data_root))
    check_consistency(resolved)
    return resolved


def check_consistency(config: Config) -> None:
    """The rules between fields (those of one field are in :data:`RULES`)."""
    t, m = config.train, config.model
    problems = []
    if t.lr_steps[-1] > t.iterations:
        problems.append(
            f"train.lr_steps = {list(t.lr_steps)} must lie in [1, train.iterations = {t.iterations}]; "
            "set train.lr_steps too when you shorten a run"
        )
    if m.head.group_norm and m.head.channels % 32:
        problems.append(f"model.head.channels = {m.head.channels} must be a multiple of 32 (GroupNorm(32))")
    if t.batch_size % t.pad_group:
        problems.append(f"train.pad_group = {t.pad_group} must divide train.batch_size = {t.batch_size}")
    if m.loss.regression.startswith("ltrb_") and m.regression != "point":
        problems.append(f"model.loss.regression = {m.loss.regression!r} needs model.regression = 'point'")
    if m.loss.normalizer == "retinanet" and (m.loss.regression != "smooth_l1" or m.head.centerness):
        problems.append(
            "model.loss.normalizer = 'retinanet' needs model.loss.regression = 'smooth_l1' "
            "and model.head.centerness = false"
        )
    if m.regression == "point" and len(m.anchors.aspect_ratios) * m.anchors.scales_per_octave != 1:
        problems.append("model.regression = 'point' needs one anchor per location")
    if m.assign.negative_iou > m.assign.positive_iou:
        problems.append(
            f"model.assign.negative_iou = {m.assign.negative_iou} must be <= "
            f"model.assign.positive_iou = {m.assign.positive_iou}"
        )
    if problems:
        raise UserError("invalid config: " + "; ".join(problems))


def batch_split_problem(train: TrainConfig, processes: int) -> tuple[str, str] | None:
    """Why ``processes`` processes cannot share ``train.batch_size`` in whole padding groups, and the
    fix, or None when they can."""
    if train.batch_size % processes:
        problem = f"train.batch_size = {train.batch_size} cannot be split over {processes} processes"
        return problem, "use a divisor of it"
    share = train.batch_size // processes
    if share % train.pad_group:
        return (
            f"train.batch_size = {train.batch_size} over {processes} processes gives {share} images per process, "
            f"not a multiple of train.pad_group = {train.pad_group}",
            f"use a train.batch_size that is a multiple of {processes * train.pad_group} "
            f"or a train.pad_group that divides {share}",
        )
    return None


def to_dict(config: Any) -> dict[str, Any]:
    """The config as nested plain data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(data: dict[str, Any], source: str) -> Config:
    """A config atssrepro stored (a run folder's ``config.toml``, a checkpoint's), which holds every field.

    One written before ``model.backbone.style`` existed was trained with torchvision's backbone, the
    only one then: it is read as such, not as the newer default ``msra``.
    """
    model = data.get("model")
    backbone = model.get("backbone") if isinstance(model, dict) else None
    if isinstance(backbone, dict) and "style" not in backbone:
        data = {**data, "model": {**model, "backbone": {**backbone, "style": "torchvision"}}}
    config = apply(Config(), data, source)
    check_consistency(config)
    return config


def to_toml(config: Config) -> str:
    return tomli_w.dumps(to_dict(config))


def config_id(config: Config) -> str:
    """A short content hash of what a run trains: the same model, data and training settings
    always get the same id. ``eval`` is left out: evaluating a run differently (another backend,
    multi-scale testing) is not another run."""
    trained = {k: v for k, v in to_dict(config).items() if k != "eval"}
    canonical = json.dumps(trained, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def data_path(config: DataConfig, relative: str) -> Path:
    return Path(config.root) / relative
