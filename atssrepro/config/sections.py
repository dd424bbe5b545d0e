"""The typed configuration that fully describes one training run: ``Config(model, data, train, eval)``.

The defaults are the official recipe of ``configs/atss/atss_R_50_FPN_1x.yaml`` of sfzhang15/ATSS
(the paper's main model, Table 3 row 2; docs/semantics.md). Every field is plain data with its value
rule next to it (``atssrepro/schema.py``), checked whenever a value enters a config: a TOML file, a
preset, ``--set``, a table spec, a checkpoint's config read back. :func:`check_consistency` adds the
rules between fields. How a config is layered is ``config/layers.py``; its id, ``config/ids.py``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from atssrepro import schema
from atssrepro.config.ids import IdOmitted, IdOmittedAtDefault
from atssrepro.errors import UserError
from atssrepro.schema import ANY, NONEMPTY, Rule, between, nonempty, positive

PROBABILITY = between(0, 1)
IMAGE_SIDE = between(32, 8192)
"""Pixels: below 32 px the stride-128 level P7 has nothing to see; above 8192 no GPU holds the image."""
SIDE_RANGE = dataclasses.replace(IMAGE_SIDE, length=2, increasing=True)
SCALE_RANGES = Rule(lambda v: v >= 0, ">= 0", allow_inf=True, length=6, increasing=True)
# Upper bounds of the counts: far beyond any setting of the paper or the official configs, so that a
# typo (extra zeros) is refused as it is read instead of running out of memory or for years.
CHANNELS = between(1, 4096)
"""Feature channels: the paper's heads and FPN have 256."""
ITERATIONS_MAX = 2_000_000
ITERATIONS = between(1, ITERATIONS_MAX)
"""Training iterations (and iteration counts within a run): the longest schedule of the paper is 180k."""
BATCH = between(1, 4096)
"""Images in a batch: the paper trains with 16."""


@dataclass(frozen=True)
class BackboneConfig:
    name: Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnext101_32x8d", "resnext101_64x4d"] = "resnet50"
    """A torchvision ResNet or ResNeXt; its stages C3-C5 feed the FPN."""
    weights: Annotated[str, ANY] = "imagenet"
    """Pretrained weights, or empty to train from scratch. Style ``msra``: ``imagenet`` (the official
    ImageNet weights of ``name``: MSRA R-50/R-101, FAIR X-101-32x8d/64x4d), a catalog name of
    ``model/pretrained.py`` (``MSRA/R-50``, ``MSRA/R-101``, ``FAIR/20171220/X-101-32x8d``,
    ``FAIR/20171220/X-101-64x4d``: taken from ``$ATSSREPRO_WEIGHTS`` or ``~/.cache/atssrepro/weights``,
    downloaded there when absent), a Detectron ``.pkl`` file, or a ``.pth`` state dict with the official
    ``backbone.body.*`` keys. Style ``torchvision``: ``imagenet`` (torchvision's classic ImageNet weights
    of ``name``, ``IMAGENET1K_V1``; for ``resnext101_64x4d`` those come from torchvision's new recipe, not
    the FAIR weights of the paper), a torchvision weights name such as
    ``ResNet50_Weights.IMAGENET1K_V2`` or a local ``.pth`` torchvision state dict."""
    trainable_stages: Annotated[int, between(0, 5)] = 3
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
    channels: Annotated[int, CHANNELS] = 256
    convs: Annotated[int, between(1, 16)] = 4
    """Conv -> GroupNorm(32) -> ReLU layers in each tower (1-16)."""
    group_norm: bool = True
    """GroupNorm in the towers (Table 1 "GroupNorm")."""
    centerness: bool = True
    """A centerness branch on the regression tower, used as sqrt(cls x centerness) at test time."""
    learnable_scales: bool = True
    """One learnable scalar per level on the regression output (Table 1 "Scalar")."""
    dcn: bool = False
    """DCNv2 in the last conv of each tower (the official dcnv2 models)."""
    point_bias_init: Annotated[float, ANY] = 4.0
    """Initial bias of the regression output with ``model.regression = 'point'`` (any finite number):
    4.0 starts every point at the 8S box, the official ATSS POINT head; 0.0 is the FCOS module's
    (Table 3 "FCOS + Center sampling"). Box regression always starts at bias 0."""


@dataclass(frozen=True)
class AnchorConfig:
    scale: Annotated[float, positive()] = 8.0
    """Anchor side in units of the level stride: 8 gives 8S = 64..1024 on P3..P7."""
    aspect_ratios: Annotated[tuple[float, ...], nonempty(positive())] = (1.0,)
    """Height / width of each anchor at a location (maskrcnn-benchmark convention), each > 0; shapes
    are rounded as the official generator rounds them (``model/anchors.py::cell_anchors``)."""
    scales_per_octave: Annotated[int, between(1, 16)] = 1
    """Octave scales 2^(i/n), i < n, multiplied on ``scale`` (1-16; RetinaNet's #A=9 has 3)."""


@dataclass(frozen=True)
class TalConfig:
    """TAL (TOOD): each GT's ``topk`` priors of largest s^alpha x u^beta, s the predicted probability of its
    class, u the IoU of the predicted box (``model/assigners/tal.py``)."""

    topk: Annotated[int, between(1, 1000)] = 13
    """Candidates per GT over all levels together (13, mmdetection's TOOD config)."""
    alpha: Annotated[float, between(0, 100)] = 1.0
    """Exponent of the class score (1)."""
    beta: Annotated[float, between(0, 100)] = 6.0
    """Exponent of the IoU (6)."""
    warmup_iters: Annotated[int, between(0, ITERATIONS_MAX)] = 0
    """TOOD's recipe: assign with ATSS (``model.assign.topk``, 9 by default) for the first this many
    iterations, then TAL; 0 is off (the controlled protocol). TOOD's ``initial_epoch = 4`` is 4 epochs of
    COCO train2017 (117,266 images with a box) at batch 16: 29,316 iterations."""
    soft_targets: bool = False
    """TOOD's classification targets: a positive's target is its alignment metric normalised per GT (so
    that the GT's largest equals the largest IoU of its positives), trained with the quality focal loss
    (beta 2) in place of the focal loss; off is the controlled protocol (hard targets, focal loss)."""


@dataclass(frozen=True)
class SimOtaConfig:
    """SimOTA (YOLOX), as mmdetection's ``SimOTAAssigner`` (``model/assigners/simota.py``)."""

    center_radius: Annotated[float, positive()] = 2.5
    """Half-side of the square around each GT centre, in strides, that also makes candidates (2.5)."""
    candidate_topk: Annotated[int, between(1, 1000)] = 10
    """IoUs summed for each GT's dynamic k (10)."""
    iou_weight: Annotated[float, between(0, 100)] = 3.0
    """Weight of the -log IoU cost (3)."""
    cls_weight: Annotated[float, between(0, 100)] = 1.0
    """Weight of the classification (BCE) cost (1)."""


@dataclass(frozen=True)
class OtaConfig:
    """OTA, as its own code (``model/assigners/ota.py``): Sinkhorn optimal transport between GTs and priors."""

    top_candidates: Annotated[int, between(1, 1000)] = 20
    """IoUs summed for each GT's supply k (20)."""
    reg_weight: Annotated[float, between(0, 100)] = 1.5
    """Weight of the -log IoU cost (1.5)."""
    sinkhorn_eps: Annotated[float, positive()] = 0.1
    """Entropic regularisation of the transport (0.1)."""
    sinkhorn_iterations: Annotated[int, between(1, 10_000)] = 50
    """Sinkhorn iterations (50)."""
    center_radius: Annotated[float, positive()] = 2.5
    """Half-side of the centre square (clipped to the GT box) that candidates lie in, in strides (2.5)."""


@dataclass(frozen=True)
class DslConfig:
    """DSL (RTMDet), as mmdetection's ``DynamicSoftLabelAssigner`` (``model/assigners/dsl.py``)."""

    topk: Annotated[int, between(1, 1000)] = 13
    """IoUs summed for each GT's dynamic k (13)."""
    iou_weight: Annotated[float, between(0, 100)] = 3.0
    """Weight of the -log IoU cost (3)."""
    soft_center_radius: Annotated[float, positive()] = 3.0
    """The soft centre prior 10^(distance / stride - this) (3)."""


@dataclass(frozen=True)
class PaaConfig:
    """PAA, as mmdetection's ``PAAHead`` (``model/assigners/paa.py``); its anchor score's focal loss is
    ``model.loss``'s (0.25, 2), its GIoU weight 1.3 (docs/semantics.md)."""

    pos_iou: Annotated[float, PROBABILITY] = 0.1
    """First pass: a prior whose best IoU is >= this is a candidate (0.1)."""
    neg_iou: Annotated[float, PROBABILITY] = 0.1
    """First pass: a prior whose best IoU is < this is negative; in between, ignored (0.1)."""
    topk: Annotated[int, between(1, 1000)] = 9
    """Candidates per GT and level, the lowest anchor scores (9)."""


PREDICTION_AWARE = ("tal", "simota", "ota", "dsl", "paa")
"""The strategies that read the network's predictions; each has a section of its own in ``model.assign``."""


@dataclass(frozen=True)
class AssignConfig:
    strategy: Literal["atss", "iou", "ssc", "center_sampling", "tal", "simota", "ota", "dsl", "paa"] = "atss"
    """How positives are chosen: ATSS; RetinaNet's IoU thresholds; FCOS's spatial and scale
    constraint; or FCOS's constraint restricted to a radius around the GT centre (Table 3 "lite").
    The prediction-aware assigners that followed ATSS (docs/assignment.md) read the detached predictions
    every iteration: ``tal`` (TOOD), ``simota`` (YOLOX), ``ota``, ``dsl`` (RTMDet), ``paa``; each takes
    its settings from its own section (``model.assign.tal.topk``, ...)."""
    topk: Annotated[int, between(1, 1000)] = 9
    """atss: candidates per pyramid level, multiplied by the anchors per location (k in Table 4, 3-19;
    at most 1000: more than the anchors of a level at any image size the paper uses)."""
    positive_iou: Annotated[float, PROBABILITY] = 0.5
    """iou: an anchor with IoU >= this is positive."""
    negative_iou: Annotated[float, PROBABILITY] = 0.4
    """iou: an anchor with IoU < this is negative; in between it is ignored."""
    low_quality_matches: bool = True
    """iou: every GT also keeps the anchors of its highest IoU."""
    in_gt_box: bool = False
    """iou: positives whose centre lies outside their GT are ignored (Table 1 "In GT Box")."""
    scale_ranges: Annotated[tuple[float, ...], SCALE_RANGES] = (0.0, 64.0, 128.0, 256.0, 512.0, float("inf"))
    """ssc, center_sampling: level l takes objects whose max(l, t, r, b) lies in [r_l, r_l+1]."""
    center_radius: Annotated[float, positive()] = 1.5
    """center_sampling: candidates lie within this many strides of the GT centre."""
    tal: Annotated[TalConfig, IdOmittedAtDefault] = field(default_factory=TalConfig)
    simota: Annotated[SimOtaConfig, IdOmittedAtDefault] = field(default_factory=SimOtaConfig)
    ota: Annotated[OtaConfig, IdOmittedAtDefault] = field(default_factory=OtaConfig)
    dsl: Annotated[DslConfig, IdOmittedAtDefault] = field(default_factory=DslConfig)
    paa: Annotated[PaaConfig, IdOmittedAtDefault] = field(default_factory=PaaConfig)


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: Annotated[float, PROBABILITY] = 0.25
    focal_gamma: Annotated[float, between(0, 10)] = 2.0
    regression: Literal["giou", "smooth_l1", "ltrb_iou", "ltrb_giou"] = "giou"
    """``giou``: GIoU on decoded boxes (official ATSS); ``smooth_l1``: RetinaNet's smooth-L1 on encoded
    targets (Table 1 "GIoU Loss" off); ``ltrb_iou`` / ``ltrb_giou``: the FCOS module's IOULoss on the
    stride-normalised (l, t, r, b) with the IoU smoothed as (inter + 1) / (union + 1), -log IoU or
    1 - GIoU (needs ``model.regression = 'point'``)."""
    smooth_l1_beta: Annotated[float, positive()] = 0.11
    """Smooth-L1 transition point (> 0): 0.11, the official ``RETINANET.BBOX_REG_BETA``."""
    reg_weight: Annotated[float, between(0, 100)] = 2.0
    """Weight of the regression loss (>= 0): 2.0 is the official ATSS GIoU weight; RetinaNet's smooth-L1
    and the FCOS module's IOULoss use 1.0."""
    normalizer: Literal["atss", "retinanet"] = "atss"
    """How the losses are normalised (``model/losses.py::combine_losses``): ``atss`` over the whole
    batch by the mean #positives per padding group (official ATSS and FCOS); ``retinanet`` per padding
    group, classification by #positives + #images and smooth-L1 by max(1, 4 #positives), as the
    maskrcnn-benchmark RetinaNet does per GPU (needs ``smooth_l1`` and no centerness)."""


@dataclass(frozen=True)
class InferenceConfig:
    score_threshold: Annotated[float, PROBABILITY] = 0.05
    """Candidates need a classification probability above this (before centerness)."""
    pre_nms_topk: Annotated[int, between(1, 100_000)] = 1000
    """Candidates kept per level and image, ranked by cls x centerness (cls alone without centerness)."""
    nms_iou: Annotated[float, PROBABILITY] = 0.6
    detections_per_image: Annotated[int, between(1, 10_000)] = 100
    """COCO evaluation counts at most 100."""


@dataclass(frozen=True)
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn_channels: Annotated[int, CHANNELS] = 256
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
    root: Annotated[str, NONEMPTY] = "data/coco"
    """Dataset root in the COCO 2017 layout; the four paths below are relative to it."""
    train_ann: Annotated[str, NONEMPTY] = "annotations/instances_train2017.json"
    train_images: Annotated[str, NONEMPTY] = "train2017"
    val_ann: Annotated[str, NONEMPTY] = "annotations/instances_val2017.json"
    val_images: Annotated[str, NONEMPTY] = "val2017"
    train_short_side: Annotated[tuple[int, int], SIDE_RANGE] = (800, 800)
    """Inclusive range [low, high] the training shorter side is drawn from; (640, 800) is the 2x
    multi-scale recipe, [800, 800] a fixed size. Always two numbers: a one-element list is an error."""
    test_short_side: Annotated[int, IMAGE_SIDE] = 800
    max_size: Annotated[int, IMAGE_SIDE] = 1333
    """Cap on the longer side, at training and at test."""
    flip_prob: Annotated[float, PROBABILITY] = 0.5
    size_divisible: Annotated[int, between(1, 256)] = 32
    num_workers: Annotated[int, between(0, 256)] = 4
    """Data-loading worker processes per training process."""


@dataclass(frozen=True)
class TrainConfig:
    batch_size: Annotated[int, BATCH] = 16
    """Global batch over all processes."""
    pad_group: Annotated[int, BATCH] = 2
    """Images padded to one canvas and run through the model together (>= 1): the official per-GPU
    batch, 16 images over 8 GPUs = 2. Each process splits its share of ``batch_size`` into groups of
    this many, so padding, the head's GroupNorm statistics and the per-group loss normalisers never
    depend on the number of processes; ``batch_size`` / processes must be a multiple of it."""
    base_lr: Annotated[float, positive()] = 0.01
    """Learning rate at batch 16; the run uses ``base_lr * batch_size / 16``."""
    iterations: Annotated[int, ITERATIONS] = 90_000
    lr_steps: Annotated[tuple[int, ...], nonempty(dataclasses.replace(ITERATIONS, increasing=True))] = (60_000, 80_000)
    lr_gamma: Annotated[float, positive(1)] = 0.1
    warmup_iters: Annotated[int, between(0, ITERATIONS_MAX)] = 500
    warmup_factor: Annotated[float, positive(1)] = 1.0 / 3.0
    warmup_method: Literal["constant", "linear"] = "constant"
    momentum: Annotated[float, Rule(lambda v: 0 <= v < 1, "in [0, 1)")] = 0.9
    weight_decay: Annotated[float, between(0, 1)] = 1e-4
    bias_lr_factor: Annotated[float, between(0, 100)] = 2.0
    bias_weight_decay: Annotated[float, between(0, 1)] = 0.0
    amp: Literal["off", "tf32", "bf16", "fp16"] = "off"
    """Training precision on CUDA: ``off`` is fp32 with TF32 math off, the official code's precision;
    ``tf32`` (TF32 tensor cores for convolutions and matmuls), ``bf16`` and ``fp16`` (autocast) are
    departures (docs/semantics.md). Ignored on the CPU, which always trains in fp32; evaluation and
    TTA always run in fp32, TF32 off."""
    checkpoint_every: Annotated[int, ITERATIONS] = 5000
    log_every: Annotated[int, ITERATIONS] = 20
    seed: Annotated[int, between(0, 2**63 - 1)] = 0


@dataclass(frozen=True)
class EvalConfig:
    batch_size: Annotated[int, between(1, 1024)] = 1
    """Images per process at test time; padding changes AP by ~0.1, so it is fixed and recorded."""
    backend: Literal["pycocotools", "faster-coco-eval"] = "pycocotools"
    tta: bool = False
    """Multi-scale + flip testing with box voting, the official settings (``engine/tta.py``)."""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: Annotated[EvalConfig, IdOmitted] = field(default_factory=EvalConfig)
    """How the run is evaluated: not part of its id, since evaluating a run differently (another
    backend, multi-scale testing) is not another run."""


def check_consistency(config: Config) -> None:
    """The rules between fields (those of one field sit next to it)."""
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
    problems += _strategy_section_problems(m.assign)
    if problems:
        raise UserError("invalid config: " + "; ".join(problems))


def _strategy_section_problems(assign: AssignConfig) -> list[str]:
    """A prediction-aware strategy's section changed while another strategy is selected (it would be
    silently ignored), and PAA's thresholds out of order."""
    problems = []
    for name in PREDICTION_AWARE:
        section, default = getattr(assign, name), schema.fields(AssignConfig)[name].default
        changed = [f.name for f in dataclasses.fields(section) if getattr(section, f.name) != getattr(default, f.name)]
        if changed and assign.strategy != name:
            settings = ", ".join(f"model.assign.{name}.{key} = {getattr(section, key)!r}" for key in changed)
            problems.append(
                f"{settings} is set but model.assign.strategy = {assign.strategy!r}; "
                f"set model.assign.strategy = {name!r} or leave model.assign.{name} at its defaults"
            )
    if assign.paa.neg_iou > assign.paa.pos_iou:
        problems.append(
            f"model.assign.paa.neg_iou = {assign.paa.neg_iou} must be <= "
            f"model.assign.paa.pos_iou = {assign.paa.pos_iou}"
        )
    return problems


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


def data_path(config: DataConfig, relative: str) -> Path:
    return Path(config.root) / relative


def config_fields(cls: type = Config, prefix: str = "") -> list[str]:
    """The dotted keys of every leaf field of ``cls``: ``model.assign.topk``, ..."""
    keys = []
    for name, f in schema.fields(cls).items():
        if dataclasses.is_dataclass(f.type):
            keys += config_fields(f.type, prefix + name + ".")
        else:
            keys.append(prefix + name)
    return keys


def rule_of(key: str) -> Rule | None:
    """The value rule of the config field ``key`` (``model.assign.topk``): the one next to it; ``ANY``
    for a Literal or a bool, whose type is its rule; None for any other field without one."""
    cls: type = Config
    *sections, name = key.split(".")
    for section in sections:
        cls = schema.fields(cls)[section].type
    f = schema.fields(cls)[name]
    return f.rule or (ANY if f.type is bool or typing.get_origin(f.type) is Literal else None)
